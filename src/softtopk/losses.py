"""The top-k cross-entropy loss of Petersen et al. (ICML 2022) over a distribution P_K of k.

    loss(s, y) = -log( sum_k P_K(k) sum_{r <= k} P[r, y] ) = -log( sum_r w_r P[r, y] ),
    w_r = sum_{k >= r} P_K(k),

with P the rank probabilities of a ranking relaxation; only the true class's row is computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._checks import check_choice, check_scores
from .ranking import METHODS, check_relaxation, compute_dtype, relaxation

Tensor = torch.Tensor

LOSS_METHODS = ("softmax", *METHODS)
TOP1_MODES = ("sm", "smce", "sort")
REDUCTIONS = ("mean", "sum", "none")
_LOG_EPS = 1e-7  # the log is taken of p * (1 - 2 eps) + eps, so that p = 0 gives a finite loss


@dataclass(frozen=True)
class _Config:
    """Validated hyper-parameters of the loss. `rank_weights[r]` weighs P[r, y] (the P_K(1) part
    is left out in the 'sm' and 'smce' modes, where softmax supplies it); `item_ranks` is the
    relaxation's fast path, bound to its parameters once."""

    p_k: tuple[float, ...]
    rank_weights: tuple[float, ...]
    method: str
    beta: float
    m: int | None
    distribution: str
    art_lambda: float
    top1_mode: str
    item_ranks: Callable[[Tensor, Tensor, int], Tensor] | None


def _check_p_k(p_k: Sequence[float] | Tensor) -> tuple[float, ...]:
    if isinstance(p_k, Tensor):
        if p_k.dim() != 1:
            raise ValueError(f"p_k must be a 1-D sequence of probabilities, got shape {tuple(p_k.shape)}")
        p_k = p_k.tolist()
    try:
        values = tuple(float(p) for p in p_k)
    except (TypeError, ValueError):
        raise TypeError(f"p_k must be a sequence of probabilities, got {p_k!r}") from None
    if not values:
        raise ValueError("p_k must hold at least one probability, got an empty sequence")
    if any(not math.isfinite(p) or p < 0 for p in values):
        raise ValueError(f"p_k must hold finite non-negative probabilities, got {list(values)}")
    if abs(sum(values) - 1) > 1e-4:
        raise ValueError(f"p_k must sum to 1 (within 1e-4), got {list(values)} summing to {sum(values)}")
    return values


def make_config(
    p_k: Sequence[float] | Tensor,
    method: str,
    inverse_temperature: float,
    m: int | None,
    distribution: str,
    art_lambda: float,
    top1_mode: str,
) -> _Config:
    """Validate the loss's hyper-parameters once."""
    p_k = _check_p_k(p_k)
    check_choice(method, "method", LOSS_METHODS)
    check_choice(top1_mode, "top1_mode", TOP1_MODES)
    if method == "softmax":
        if p_k[0] < 1 - 1e-4:
            raise ValueError(
                f"method='softmax' is plain cross-entropy and needs p_k = [1, 0, ...], got {list(p_k)}"
            )
        beta, item_ranks = 1.0, None
    else:
        beta = check_relaxation(method, inverse_temperature, distribution, art_lambda)
        item_ranks = relaxation(method, beta, distribution, art_lambda)[1]
    if m is not None:
        if isinstance(m, bool) or not isinstance(m, int):
            raise TypeError(f"m must be an int or None, got {type(m).__name__}")
        if m <= len(p_k):
            raise ValueError(f"m must be greater than K = len(p_k) = {len(p_k)}, got m = {m}")
    tail = [sum(p_k[r:]) for r in range(len(p_k))]  # w_r = P(K >= r + 1)
    if top1_mode != "sort":
        tail[0] = tail[1] if len(p_k) > 1 else 0.0
    return _Config(p_k, tuple(tail), method, beta, m, distribution, float(art_lambda), top1_mode, item_ranks)


def _flatten(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Class dimension last, one row per prediction: `[M, C]` logits and `[M]` targets."""
    check_scores(input, "input")
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor of class indices, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices (e.g. int64), got dtype {target.dtype}")
    if input.dim() == 1:
        expected = ()
    else:
        expected = (input.shape[0], *input.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"target must have shape {expected} for input of shape {tuple(input.shape)} "
                         f"(classes in dimension {0 if input.dim() == 1 else 1}), got {tuple(target.shape)}")
    if input.dim() > 2:
        input = input.movedim(1, -1)
    classes = input.shape[-1]
    return input.reshape(-1, classes), target.reshape(-1)


def _preselect(logits: Tensor, target: Tensor, m: int) -> Tensor:
    """Logits of the true class followed by the m-1 highest other classes, descending.  -> [M, m]"""
    with torch.no_grad():
        top = logits.topk(m, dim=1).indices
        # Column j of the others is column j of top, or j + 1 once the true class has been passed.
        passed = (top[:, : m - 1] == target.unsqueeze(1)).cumsum(dim=1)
        others = top.gather(1, passed + torch.arange(m - 1, device=top.device))
        kept = torch.cat([target.unsqueeze(1), others], dim=1)
    return logits.gather(1, kept)


def _per_sample_loss(logits: Tensor, target: Tensor, cfg: _Config) -> Tensor:
    """`[M, C]` logits, `[M]` valid targets -> `[M]` losses in the compute dtype."""
    k = len(cfg.p_k)
    if logits.shape[1] < k:
        raise ValueError(f"p_k has K = {k} entries but the input has only C = {logits.shape[1]} classes")
    scores = logits.to(compute_dtype(logits.dtype))
    if cfg.m is not None and cfg.m < scores.shape[1]:
        scores, label = _preselect(scores, target, cfg.m), torch.zeros_like(target)
    else:
        label = target
    log_softmax_y = None
    if cfg.top1_mode != "sort":
        log_softmax_y = -F.cross_entropy(scores, label, reduction="none")
    if any(cfg.rank_weights):
        ranks = cfg.item_ranks(scores.contiguous(), label, k)
        weights = torch.tensor(cfg.rank_weights, dtype=scores.dtype, device=scores.device)
        p = (ranks * weights).sum(dim=1)
    else:
        p = torch.zeros_like(scores[:, 0])
    if cfg.top1_mode == "sm":
        p = p + cfg.p_k[0] * log_softmax_y.exp()
    loss = -torch.log(p * (1 - 2 * _LOG_EPS) + _LOG_EPS)
    if cfg.top1_mode == "smce":
        loss = cfg.p_k[0] * -log_softmax_y + (1 - cfg.p_k[0]) * loss
    return loss


def _check_weight(weight: Tensor | None, classes: int | None = None) -> None:
    if weight is None:
        return
    if not isinstance(weight, Tensor) or not weight.is_floating_point() or weight.dim() != 1:
        raise TypeError("weight must be a 1-D floating-point tensor of per-class weights")
    if classes is not None and weight.shape[0] != classes:
        raise ValueError(f"weight must have one entry per class, C = {classes}, got {weight.shape[0]}")


def topk_loss(
    input: Tensor, target: Tensor, cfg: _Config, weight: Tensor | None, ignore_index: int, reduction: str
) -> Tensor:
    """The loss for a validated configuration; see `topk_cross_entropy`."""
    check_choice(reduction, "reduction", REDUCTIONS)
    if cfg.method == "softmax":
        return F.cross_entropy(input, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
    logits, flat_target = _flatten(input, target)
    classes = logits.shape[1]
    _check_weight(weight, classes)
    valid = flat_target != ignore_index
    if bool((valid & ((flat_target < 0) | (flat_target >= classes))).any()):
        raise ValueError(f"target values must lie in [0, {classes}) or equal ignore_index = {ignore_index}")
    safe_target = torch.where(valid, flat_target, 0)
    with torch.autocast(logits.device.type, enabled=False):  # the relaxation runs in float32 or float64
        loss = _per_sample_loss(logits, safe_target, cfg)
    sample_weight = valid.to(loss.dtype)
    if weight is not None:
        sample_weight = sample_weight * weight.to(loss.dtype)[safe_target]
    loss = loss * sample_weight
    if reduction == "mean":
        return loss.sum() / sample_weight.sum()
    if reduction == "sum":
        return loss.sum()
    return loss.reshape(target.shape)


def topk_cross_entropy(
    input: Tensor,
    target: Tensor,
    p_k: Sequence[float] | Tensor,
    method: str = "bitonic",
    inverse_temperature: float = 1.0,
    m: int | None = None,
    distribution: str = "cauchy",
    art_lambda: float = 0.25,
    top1_mode: str = "sm",
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Functional form of `TopKCrossEntropyLoss`; see there for the arguments."""
    cfg = make_config(p_k, method, inverse_temperature, m, distribution, art_lambda, top1_mode)
    return topk_loss(input, target, cfg, weight, ignore_index, reduction)


class TopKCrossEntropyLoss(torch.nn.Module):
    """Differentiable top-k cross-entropy, a drop-in replacement for `torch.nn.CrossEntropyLoss`.

    Args:
        p_k: probabilities P_K(k) for k = 1..K (sums to 1), e.g. `[.5, 0, 0, 0, .5]` for half
            top-1, half top-5.
        method: 'softmax' (plain cross-entropy, only with p_k = [1, 0, ...]), 'bitonic',
            'splitter_selection', 'odd_even', 'neuralsort', 'softsort' or 'sinkhorn'.
        inverse_temperature: steepness of the relaxation.
        m: rank only the true class and the m-1 highest other classes (m > K); None or m >= C
            ranks every class.
        distribution, art_lambda: comparator sigmoid of the sorting networks (see `rank_probabilities`).
        top1_mode: 'sm' replaces the k = 1 term by the softmax probability of the target;
            'smce' adds P_K(1) * cross-entropy to (1 - P_K(1)) * the top-k loss of k >= 2;
            'sort' uses the relaxation for every k.
        weight: optional per-class weights `[C]`; ignore_index: target value that is skipped;
        reduction: 'mean' (weighted mean), 'sum' or 'none'.

    Shape:
        input `[N, C]` or `[N, C, d1, ...]` (or `[C]`) logits; target `[N]` or `[N, d1, ...]` (or `[]`)
        class indices; output a scalar, or the target's shape with reduction='none'.
    """

    def __init__(
        self,
        p_k: Sequence[float] | Tensor,
        method: str = "bitonic",
        inverse_temperature: float = 1.0,
        m: int | None = None,
        distribution: str = "cauchy",
        art_lambda: float = 0.25,
        top1_mode: str = "sm",
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.config = make_config(p_k, method, inverse_temperature, m, distribution, art_lambda, top1_mode)
        check_choice(reduction, "reduction", REDUCTIONS)
        _check_weight(weight)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return topk_loss(input, target, self.config, self.weight, self.ignore_index, self.reduction)

    def extra_repr(self) -> str:
        c = self.config
        return (f"p_k={list(c.p_k)}, method={c.method!r}, inverse_temperature={c.beta}, m={c.m}, "
                f"distribution={c.distribution!r}, top1_mode={c.top1_mode!r}, reduction={self.reduction!r}")
