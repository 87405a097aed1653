"""The top-k cross-entropy loss of Petersen et al. (ICML 2022) over a distribution P_K of k.

    L(s, y) = -log( sum_k P_K(k) sum_{r <= k} P[r, y] ) = -log( sum_r w_r P[r, y] ),
    w_r = sum_{k >= r} P_K(k),

with P the rank probabilities of a ranking relaxation; only the rows of the target classes are
computed. Targets are class indices, class probabilities or multi-label sets (see `targets.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from ._checks import check_choice, eager_cpu
from ._conventions import check_ignore_index, check_reduction, check_weight, flatten, reduce
from .ranking import METHODS, check_relaxation, compute_dtype, relaxation
from .targets import (
    Targets,
    check_probabilities,
    checked_indices,
    index_targets,
    multilabel_targets,
    probability_targets,
)

Tensor = torch.Tensor

LOSS_METHODS = ("softmax", *METHODS)
TOP1_MODES = ("sm", "smce", "sort")
DEFAULT_EPS = 1e-7  # the original's: the log is taken of p * (1 - 2 eps) + eps


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
    item_ranks: Callable[..., Tensor] | None
    eps: float = DEFAULT_EPS
    label_smoothing: float = 0.0

    @cached_property
    def ranked(self) -> bool:
        """Whether any rank term needs the relaxation."""
        return any(self.rank_weights)

    @cached_property
    def log_rank_weights(self) -> tuple[float, ...]:
        return tuple(math.log(w) if w > 0 else -math.inf for w in self.rank_weights)

    @cached_property
    def scaled_rank_weights(self) -> tuple[float, ...]:
        """The weights times 1 - 2 eps: p (1 - 2 eps) + eps in one product, eps its bias."""
        return tuple(w * (1 - 2 * self.eps) for w in self.rank_weights)


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


def _check_fraction(value: object, name: str, upper: float, closed: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not (0 <= value <= upper if closed else 0 <= value < upper):
        raise ValueError(f"{name} must lie in [0, {upper}{']' if closed else ')'}, got {value}")
    return float(value)


def make_config(
    p_k: Sequence[float] | Tensor,
    method: str,
    inverse_temperature: float,
    m: int | None,
    distribution: str,
    art_lambda: float,
    top1_mode: str,
    eps: float = DEFAULT_EPS,
    label_smoothing: float = 0.0,
) -> _Config:
    """Validate the loss's hyper-parameters once."""
    p_k = _check_p_k(p_k)
    check_choice(method, "method", LOSS_METHODS)
    check_choice(top1_mode, "top1_mode", TOP1_MODES)
    eps = _check_fraction(eps, "eps", 0.5, closed=False)
    label_smoothing = _check_fraction(label_smoothing, "label_smoothing", 1.0, closed=True)
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
    return _Config(p_k, tuple(tail), method, beta, m, distribution, float(art_lambda), top1_mode, item_ranks,
                   eps, label_smoothing)


def _padding(logits: Tensor, k: int) -> int:
    """Columns of -inf to append before a topk of k on the CPU: its topk switches to a heap at
    C >= 64 k, which is faster from about 38 k columns on."""
    classes = logits.shape[1]
    if not eager_cpu(logits) or not 38 * k <= classes < 64 * k:
        return 0
    return 64 * k - classes


def _top_indices(key: Tensor, k: int, classes: int) -> Tensor:
    """`key.topk(k, dim=1).indices` of a key that may carry -inf padding beyond `classes` columns:
    a padding column is chosen only in rows with fewer than k finite keys, where any -inf class serves."""
    top = key.topk(k, dim=1).indices
    if key.shape[1] > classes:
        padding = top >= classes
        if bool(padding.any()):
            top = torch.where(padding, key[:, :classes].argmin(1, keepdim=True), top)
    return top


def _preselect(logits: Tensor, classes: Tensor, m: int) -> Tensor:
    """Logits of the J target classes followed by the m-J highest other classes, descending.
    [M, C], [M, J] -> [M, m]"""
    j, pad = classes.shape[1], _padding(logits, m)
    with torch.no_grad():
        if j == 1 and not pad and eager_cpu(logits):
            # No full-size copy, which costs more than a few small ops on the CPU: column i of the
            # others is column i of the top m, or i + 1 once the target has been passed.
            top = logits.topk(m, dim=1).indices
            passed = (top[:, : m - 1] == classes).cumsum(dim=1)
            others = top.gather(1, passed + _constant(tuple(range(m - 1)), top, torch.long))
            kept = torch.cat([classes, others], dim=1)
        elif j == 1:  # the target first (+inf), then the m - 1 highest others
            key = F.pad(logits, (0, pad), value=-torch.inf) if pad else logits.clone()
            kept = _top_indices(key.scatter_(1, classes, torch.inf), m, logits.shape[1])
        else:  # several targets, in their order: the first m - j others among the top m
            key = F.pad(logits, (0, pad), value=-torch.inf) if pad else logits
            top = _top_indices(key, m, logits.shape[1])
            is_target = (top[:, :, None] == classes[:, None, :]).any(-1)
            others = top.gather(1, is_target.to(torch.uint8).argsort(dim=1, stable=True)[:, : m - j])
            kept = torch.cat([classes, others], dim=1)
    return logits.gather(1, kept)


def _log_softmax_at(scores: Tensor, label: Tensor | None, j: int) -> Tensor:
    """log softmax(scores)[label] `[M, J]`, or of the first j columns where `label` is None. One label
    per row goes through `cross_entropy`, whose fused backward compiles correctly where a gather's
    scatter did not."""
    if label is None:
        return scores.log_softmax(1)[:, :j]
    if j == 1:
        return -F.cross_entropy(scores, label[:, 0], reduction="none")[:, None]
    return scores.gather(1, label) - scores.logsumexp(1, keepdim=True)


def _softmax_at(scores: Tensor, label: Tensor | None, j: int) -> Tensor:
    """softmax(scores)[label] `[M, J]`, or of the first j columns where `label` is None."""
    if label is None:
        return scores.softmax(1)[:, :j]
    return _log_softmax_at(scores, label, j).exp()


_CONSTANTS: dict[tuple, Tensor] = {}


def _constant(values: tuple, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """`values` as a tensor on `like`'s device (and dtype), made once: no copy to the device per call."""
    dtype = dtype or like.dtype
    if torch.compiler.is_compiling():
        return torch.tensor(values, dtype=dtype, device=like.device)
    key = (values, dtype, like.device)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, dtype=dtype, device=like.device)
    return _CONSTANTS[key]


def class_losses(logits: Tensor, classes: Tensor, cfg: _Config) -> Tensor:
    """L(s, c) for the classes `[M, J]` of each row of logits `[M, C]` -> `[M, J]` in the compute
    dtype; +inf where the class's logit is -inf."""
    k = len(cfg.p_k)
    if logits.shape[1] < k:
        raise ValueError(f"p_k has K = {k} entries but the input has only C = {logits.shape[1]} classes")
    j = classes.shape[1]
    scores = logits.to(compute_dtype(logits.dtype))
    preselected = cfg.m is not None and cfg.m < scores.shape[1]
    if preselected:
        if j >= cfg.m:
            raise ValueError(f"m = {cfg.m} must exceed the number of target classes of every row, got {j}")
        scores = _preselect(scores, classes, cfg.m)  # the targets are its first j columns
        label = _constant(tuple(range(j)), scores, torch.long).expand_as(classes)
        target_logits = scores[:, :j]
    else:
        label = classes
        target_logits = scores.gather(1, label)
    gathered = None if preselected else label
    p1 = cfg.p_k[0]
    if cfg.method == "softmax" or (cfg.top1_mode == "smce" and p1 >= 1):
        return -_log_softmax_at(scores, gathered, j)
    masked = target_logits == -torch.inf
    log_space = cfg.eps == 0
    ranks = cfg.item_ranks(scores.contiguous(), label, k, log=log_space) if cfg.ranked else None
    if log_space:
        terms = [] if ranks is None else [ranks + _constant(cfg.log_rank_weights, ranks)]
        if cfg.top1_mode == "sm" and p1 > 0:
            terms.append(_log_softmax_at(scores, gathered, j)[..., None] + math.log(p1))
        # A masked target has no finite term: it gets +inf below, with zero gradient.
        loss = -torch.cat(terms, dim=-1).masked_fill(masked[..., None], 0.0).logsumexp(-1)
    else:
        scale = 1 - 2 * cfg.eps
        if ranks is None:
            p = torch.full_like(target_logits, cfg.eps)
        else:
            weights = _constant(cfg.scaled_rank_weights, ranks)
            p = torch.baddbmm(_constant((cfg.eps,), ranks), ranks,
                              weights[:, None].expand(ranks.shape[0], -1, 1)).squeeze(-1)
        if cfg.top1_mode == "sm" and p1 > 0:
            p = torch.add(p, _softmax_at(scores, gathered, j), alpha=p1 * scale)
        loss = -torch.log(p)
    if cfg.top1_mode == "smce":
        loss = p1 * -_log_softmax_at(scores, gathered, j) + (1 - p1) * loss
    return loss.masked_fill(masked, torch.inf)


def _smoothing_term(scores: Tensor, classes: Tensor, weight: Tensor | None) -> Tensor:
    """H(u, softmax(s)) = -(1/C) sum_c weight_c log softmax(s)_c, the label-smoothing term: cross-entropy
    at label smoothing 1, whose fused kernel is about twice as fast as a logsumexp and a mean (any
    valid `classes [M]` serve, their term has weight 0).  [M, C] -> [M]"""
    w = None if weight is None else weight.to(scores.dtype)
    return F.cross_entropy(scores, classes, weight=w, label_smoothing=1.0, reduction="none")


def _targets(scores: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int) -> Targets:
    if target.dtype == torch.bool:
        return multilabel_targets(target, scores, weight)
    if target.is_floating_point():
        return probability_targets(target, scores, weight)
    return index_targets(target, scores.shape[1], weight, ignore_index, scores.dtype)


def topk_loss(
    input: Tensor, target: Tensor, cfg: _Config, weight: Tensor | None, ignore_index: int, reduction: str
) -> Tensor:
    """The loss for a validated configuration; see `topk_cross_entropy`."""
    check_reduction(reduction)
    check_ignore_index(ignore_index)
    logits, flat_target, shape = flatten(input, target)
    check_weight(weight, logits.shape[1])
    if cfg.method == "softmax" and target.dtype != torch.bool:  # validated as for the relaxations
        if target.is_floating_point():
            check_probabilities(flat_target)
        else:
            checked_indices(flat_target, logits.shape[1], ignore_index)
        return F.cross_entropy(input, target if target.is_floating_point() else target.long(), weight=weight,
                               ignore_index=ignore_index, reduction=reduction,
                               label_smoothing=cfg.label_smoothing)
    scores = logits.to(compute_dtype(logits.dtype))
    t = _targets(scores, flat_target, weight, ignore_index)
    with torch.autocast(logits.device.type, enabled=False):  # the relaxation runs in float32 or float64
        losses = class_losses(scores, t.classes, cfg)
        rows = t.rows(losses)
        if cfg.label_smoothing > 0:
            smooth = t.smoothing(_smoothing_term(scores, t.classes[:, 0], weight))
            rows = (1 - cfg.label_smoothing) * rows + cfg.label_smoothing * smooth
    return reduce(rows, reduction, shape, t.count)


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
    label_smoothing: float = 0.0,
    eps: float = DEFAULT_EPS,
) -> Tensor:
    """Functional form of `TopKCrossEntropyLoss`; see there for the arguments."""
    cfg = make_config(p_k, method, inverse_temperature, m, distribution, art_lambda, top1_mode, eps,
                      label_smoothing)
    return topk_loss(input, target, cfg, weight, ignore_index, reduction)


class TopKCrossEntropyLoss(torch.nn.Module):
    """Differentiable top-k cross-entropy, a drop-in replacement for `torch.nn.CrossEntropyLoss`.

    Args:
        p_k: probabilities P_K(k) for k = 1..K (sums to 1), e.g. `[.5, 0, 0, 0, .5]` for half
            top-1, half top-5.
        method: 'softmax' (plain cross-entropy, only with p_k = [1, 0, ...]) or a relaxation of
            `softtopk.METHODS`.
        inverse_temperature: steepness of the relaxation.
        m: rank only the target classes and the highest other classes, m in all (m > K); None or
            m >= C ranks every class.
        distribution, art_lambda: comparator sigmoid of the sorting networks (see `rank_probabilities`).
        top1_mode: 'sm' replaces the k = 1 term by the softmax probability of the target;
            'smce' adds P_K(1) * cross-entropy to (1 - P_K(1)) * the top-k loss of k >= 2;
            'sort' uses the relaxation for every k.
        weight: optional per-class weights `[C]`; ignore_index: target value that is skipped;
        reduction: 'mean' (weighted mean), 'sum' or 'none'.
        label_smoothing: eps_ls in [0, 1]: (1 - eps_ls) * loss + eps_ls * H(uniform, softmax(s)),
            as in `CrossEntropyLoss`.
        eps: the log is taken of p * (1 - 2 eps) + eps (the original's 1e-7), so that p = 0 gives a
            finite loss; eps = 0 gives the exact -log p, computed in the log domain, finite and with
            a gradient that does not vanish where p underflows (slower for the sorting networks).

    Shape:
        input `[N, C]` or `[N, C, d1, ...]` (or `[C]`) logits, `-inf` for masked classes; target
        `[N]` or `[N, d1, ...]` (or `[]`) class indices, or the input's shape: class probabilities
        (float, rows summing to 1) or multi-label sets (bool); output a scalar, or the shape of the
        predictions with reduction='none'.
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
        label_smoothing: float = 0.0,
        eps: float = DEFAULT_EPS,
    ) -> None:
        super().__init__()
        self.config = make_config(p_k, method, inverse_temperature, m, distribution, art_lambda, top1_mode,
                                  eps, label_smoothing)
        check_reduction(reduction)
        check_weight(weight)
        self.register_buffer("weight", weight)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return topk_loss(input, target, self.config, self.weight, self.ignore_index, self.reduction)

    def extra_repr(self) -> str:
        c = self.config
        return (f"p_k={list(c.p_k)}, method={c.method!r}, inverse_temperature={c.beta}, m={c.m}, "
                f"distribution={c.distribution!r}, top1_mode={c.top1_mode!r}, reduction={self.reduction!r}, "
                f"label_smoothing={c.label_smoothing}, eps={c.eps}")
