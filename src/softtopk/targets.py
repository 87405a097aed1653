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

from ._checks import check_target_range

Tensor = torch.Tensor
PROBABILITY_TOLERANCE = 1e-4  # rows of probability targets must sum to 1 within this


@dataclass(frozen=True)
class Targets:
    """`classes [M, J]` with `weights [M, J]` (0 for the padding of rows with fewer classes), and per
    row `smooth_weight [M]` (of the label-smoothing term) and `mean_weight [M]` (the row's share of the
    'mean' denominator). `selected [M, J]`: the class is a target of the row, not padding."""

    classes: Tensor
    weights: Tensor
    selected: Tensor
    smooth_weight: Tensor
    mean_weight: Tensor


def _class_weight(weight: Tensor | None, classes: Tensor, dtype: torch.dtype) -> Tensor | float:
    return 1.0 if weight is None else weight.to(dtype)[classes]


def index_targets(target: Tensor, classes: int, weight: Tensor | None, ignore_index: int,
                  dtype: torch.dtype) -> Targets:
    """Class indices `[M]` (or `ignore_index`)."""
    valid = target != ignore_index
    check_target_range(target, valid, classes, ignore_index)
    safe = torch.where(valid, target, 0)[:, None]
    counted = valid.to(dtype)
    row = counted if weight is None else counted * _class_weight(weight, safe[:, 0], dtype)
    return Targets(safe, row[:, None], valid[:, None], counted, row)


def _padded_classes(key: Tensor, count: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
    """The J = max(count) classes of each row with the largest `key` (its `count` target classes,
    whose keys are positive), padded with the highest-scoring other classes.  -> [M, J], [M, J] bool"""
    j = int(count.max()) if count.numel() else 0
    j = max(j, 1)
    targets = key.topk(j, dim=1).indices
    others = logits.masked_fill(key > 0, -torch.inf).topk(min(j, logits.shape[1]), dim=1).indices
    position = torch.arange(j, device=key.device)
    selected = position < count[:, None]
    filler = others.gather(1, (position - count[:, None]).clamp(0, others.shape[1] - 1))
    return torch.where(selected, targets, filler), selected


def probability_targets(target: Tensor, logits: Tensor, weight: Tensor | None) -> Targets:
    """Class probabilities `[M, C]`: non-negative rows that sum to 1."""
    if not torch.isfinite(target).all() or (target < 0).any():
        raise ValueError("target probabilities must be finite and non-negative")
    sums = target.sum(1)
    if ((sums - 1).abs() > PROBABILITY_TOLERANCE).any():
        worst = float(sums[(sums - 1).abs().argmax()])
        raise ValueError(f"target probabilities must sum to 1 in every row (within {PROBABILITY_TOLERANCE}), "
                         f"got a row summing to {worst:.6g}")
    q = target.to(logits.dtype)
    classes, selected = _padded_classes(q, (q > 0).sum(1), logits)
    weights = q.gather(1, classes) * _class_weight(weight, classes, logits.dtype)
    ones = torch.ones_like(q[:, 0])
    return Targets(classes, weights, selected, ones, ones)


def multilabel_targets(target: Tensor, logits: Tensor, weight: Tensor | None) -> Targets:
    """K-hot booleans `[M, C]`: every true class of a row is correct; rows without one are skipped."""
    count = target.sum(1)
    # Keys that order a row's true classes by class index: C - c for a true class c, else 0.
    order = torch.arange(target.shape[1], 0, -1, device=target.device, dtype=logits.dtype)
    classes, selected = _padded_classes(target * order, count, logits)
    dtype = logits.dtype
    share = selected.to(dtype) / count.clamp_min(1).to(dtype)[:, None]
    weights = share * _class_weight(weight, classes, dtype)
    return Targets(classes, weights, selected, (count > 0).to(dtype), weights.sum(1))
