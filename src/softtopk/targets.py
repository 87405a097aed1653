"""The targets a classification loss takes, as weighted classes per row.

`TopKCrossEntropyLoss` accepts, like `torch.nn.CrossEntropyLoss`, class indices `[M]` and class
probabilities `[M, C]` (label smoothing, mixup, cutmix), and also multi-label targets: a boolean
`[M, C]` (K-hot) marking every correct class. Each becomes `Targets`: per row the J classes whose
losses it needs, the weight of each, and the weights of the label-smoothing term and of the row in
a 'mean' reduction, so that one loss routine serves all three with the conventions of
`CrossEntropyLoss`:

- indices: the class's `weight`, rows equal to `ignore_index` are skipped, 'mean' divides by the
  summed weights of the targets;
- probabilities: sum_c q_c weight_c L(s, c), 'mean' divides by the number of rows; a row's uniform
  floor C min_c q_c is taken as label smoothing (see `probability_targets`), and rows need not sum
  to 1 (the loss is linear in them, as cross-entropy is);
- multi-label: the mean over the true classes of weight_c L(s, c); rows without a true class are
  skipped, 'mean' divides by the summed mean weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._checks import check_none, check_target_range, eager_cpu

Tensor = torch.Tensor


@dataclass(frozen=True)
class Targets:
    """Per row the classes `[M, J]` whose losses it needs. `weights [M, J]` weighs each loss (0 for
    padding; None: 1 in every row that is not ignored); `ignored [M]` marks rows that count for
    nothing (skipped in the label-smoothing term too); `mean_weight [M]` is each row's share of the
    'mean' denominator (None: 1 for every row that is not ignored); `uniform [M]` is each row's
    weight of the uniform term H(u, softmax(s)) beside `weights` (None: no such term)."""

    classes: Tensor
    weights: Tensor | None
    ignored: Tensor
    mean_weight: Tensor | None = None
    uniform: Tensor | None = None

    def rows(self, losses: Tensor) -> Tensor:
        """The weighted losses `[M, J]` summed per row `[M]`. Entries that count for nothing are
        selected away, not multiplied by 0, so an infinite loss there leaves no NaN in the value or
        the gradient."""
        if self.weights is None:
            kept = losses.masked_fill(self.ignored[:, None], 0.0)
        else:
            kept = torch.where(self.weights > 0, self.weights * losses, 0.0)
        return kept.squeeze(1) if kept.shape[1] == 1 else kept.sum(1)

    def smoothing(self, term: Tensor) -> Tensor:
        """The label-smoothing term `[M]` of the rows that count."""
        return term.masked_fill(self.ignored, 0.0)

    def count(self) -> Tensor:
        """The denominator of 'mean'."""
        if self.mean_weight is None:
            return self.ignored.numel() - self.ignored.sum()
        return self.mean_weight.sum()


def checked_indices(target: Tensor, classes: int, ignore_index: int) -> tuple[Tensor, Tensor]:
    """(rows equal to `ignore_index` `[M]`, the targets with those replaced by 0 `[M, 1]`), after a
    check of their range: on the CPU and under compile; elsewhere the indexing ops of the loss assert
    it on the device, as cross_entropy's do."""
    ignored = target == ignore_index
    safe = target.masked_fill(ignored, 0)[:, None]
    if eager_cpu(target) or torch.compiler.is_compiling():
        check_target_range(safe, classes, ignore_index)
    return ignored, safe


def index_targets(target: Tensor, classes: int, weight: Tensor | None, ignore_index: int,
                  dtype: torch.dtype) -> Targets:
    """Class indices `[M]` (or `ignore_index`)."""
    ignored, safe = checked_indices(target, classes, ignore_index)
    if weight is None:
        return Targets(safe, None, ignored)
    row = weight.to(dtype)[safe[:, 0]].masked_fill(ignored, 0.0)
    return Targets(safe, row[:, None], ignored, row)


def _padded_classes(key: Tensor, count: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
    """The J = max(count) classes of each row with the largest `key` (its `count` target classes,
    whose keys are positive), padded with the highest-scoring other classes.  -> [M, J], [M, J] bool"""
    j = max(int(count.max()) if count.numel() else 0, 1)
    targets = key.topk(j, dim=1).indices
    position = torch.arange(j, device=key.device)
    selected = position < count[:, None]
    if bool(selected.all()):  # no row needs padding (as in mixup, with two classes in every row)
        return targets, selected
    others = logits.masked_fill(key > 0, -torch.inf).topk(min(j, logits.shape[1]), dim=1).indices
    filler = others.gather(1, (position - count[:, None]).clamp(0, others.shape[1] - 1))
    return torch.where(selected, targets, filler), selected


def check_probabilities(target: Tensor) -> None:
    """Raise ValueError unless the entries of `target [M, C]` are finite and non-negative (on the
    device and under compile: a device-side assertion, no wait). Rows need not sum to 1: as in
    `CrossEntropyLoss`, the loss is linear in each row."""
    check_none(~(target >= 0) | (target == torch.inf), "target probabilities must be finite and non-negative")


def probability_targets(target: Tensor, logits: Tensor, weight: Tensor | None) -> Targets:
    """Class probabilities `[M, C]`. A row's smallest entry is its uniform floor: q = (q - min q) +
    C min q * u, the sparse part weighs the classes above the floor and the floor goes to the
    label-smoothing term, `uniform = C min q` (as timm's Mixup with label smoothing makes its rows
    `(1 - e) mix + e / C`). Nothing is read back from the device beyond the count of classes."""
    check_probabilities(target)
    q = target.to(logits.dtype)
    floor = q.amin(1, keepdim=True)
    sparse = q - floor  # exactly 0 at the floor's classes
    classes, _ = _padded_classes(sparse, torch.count_nonzero(sparse, dim=1), logits)
    weights = sparse.gather(1, classes) * _class_weight(weight, classes, logits.dtype)
    ignored = torch.zeros(q.shape[0], dtype=torch.bool, device=q.device)
    uniform = floor[:, 0] * q.shape[1]
    if eager_cpu(q) and not bool(uniform.any()):  # no row has a floor: no uniform term to compute
        uniform = None
    return Targets(classes, weights, ignored, uniform=uniform)


def multilabel_targets(target: Tensor, logits: Tensor, weight: Tensor | None) -> Targets:
    """K-hot booleans `[M, C]`: every true class of a row is correct; rows without one are skipped."""
    count = target.sum(1)
    # Keys that order a row's true classes by class index: C - c for a true class c, else 0.
    order = torch.arange(target.shape[1], 0, -1, device=target.device, dtype=logits.dtype)
    classes, selected = _padded_classes(target * order, count, logits)
    dtype = logits.dtype
    share = selected.to(dtype) / count.clamp_min(1).to(dtype)[:, None]
    weights = share * _class_weight(weight, classes, dtype)
    return Targets(classes, weights, count == 0, weights.sum(1))


def _class_weight(weight: Tensor | None, classes: Tensor, dtype: torch.dtype) -> Tensor | float:
    return 1.0 if weight is None else weight.to(dtype)[classes]
