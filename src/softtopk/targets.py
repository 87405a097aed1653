"""The targets a classification loss takes, as weighted classes per row.

`TopKCrossEntropyLoss` accepts, like `torch.nn.CrossEntropyLoss`, class indices `[M]` and class
probabilities `[M, C]` (label smoothing, mixup, cutmix), and also multi-label targets: a boolean
`[M, C]` (K-hot) marking every correct class. Each becomes `Targets`: per row the J classes whose
losses it needs, the weight of each, and the weights of the label-smoothing term and of the row in
a 'mean' reduction, so that one loss routine serves all three with the conventions of
`CrossEntropyLoss`:

- indices: the class's `weight`, rows equal to `ignore_index` are skipped, 'mean' divides by the
  summed weights of the targets;
- probabilities: sum_c q_c weight_c L(s, c), 'mean' divides by the number of rows;
- multi-label: the mean over the true classes of weight_c L(s, c); rows without a true class are
  skipped, 'mean' divides by the summed mean weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._checks import check_target_range, eager_cpu

Tensor = torch.Tensor
PROBABILITY_TOLERANCE = 1e-4  # rows of probability targets must sum to 1 within this


@dataclass(frozen=True)
class Targets:
    """Per row the classes `[M, J]` whose losses it needs. `weights [M, J]` weighs each loss (0 for
    padding; None: 1 in every row that is not ignored); `ignored [M]` marks rows that count for
    nothing (skipped in the label-smoothing term too); `mean_weight [M]` is each row's share of the
    'mean' denominator (None: 1 for every row that is not ignored)."""

    classes: Tensor
    weights: Tensor | None
    ignored: Tensor
    mean_weight: Tensor | None = None

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


def check_probabilities(target: Tensor) -> Tensor:
    """Raise ValueError unless the rows of `target [M, C]` are finite, non-negative and sum to 1
    (one read back from the device); returns the row sums `[M]`."""
    sums = target.sum(1)
    off = (sums - 1).abs()  # NaN where a NaN or inf reaches its row's sum
    if bool(((target.amin(1) < 0) | ~(off <= PROBABILITY_TOLERANCE)).any()):
        if not (bool(torch.isfinite(sums).all()) and target.amin() >= 0):
            raise ValueError("target probabilities must be finite and non-negative")
        raise ValueError(f"target probabilities must sum to 1 in every row (within {PROBABILITY_TOLERANCE}), "
                         f"got a row summing to {float(sums[off.argmax()]):.6g}")
    return sums


def probability_targets(target: Tensor, logits: Tensor, weight: Tensor | None) -> Targets:
    """Class probabilities `[M, C]`: non-negative rows that sum to 1."""
    sums = check_probabilities(target)
    q = target.to(logits.dtype)
    classes, _ = _padded_classes(q, torch.count_nonzero(q, dim=1), logits)
    weights = q.gather(1, classes) * _class_weight(weight, classes, logits.dtype)
    return Targets(classes, weights, torch.zeros_like(sums, dtype=torch.bool))


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
