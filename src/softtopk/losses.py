"""The top-k cross-entropy loss of Petersen et al. (ICML 2022) over a distribution P_K of k.

    L(s, y) = -log( sum_k P_K(k) sum_{r <= k} P[r, y] ) = -log( sum_r w_r P[r, y] ),
    w_r = sum_{k >= r} P_K(k),

with P the rank probabilities of a ranking relaxation; only the rows of the target classes are
computed. Targets are class indices, class probabilities or multi-label sets (see `targets.py`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ._checks import check_choice, check_int, check_real, eager_cpu
from ._conventions import check_ignore_index, check_reduction, check_weight, flatten, reduce
from .ranking import METHODS, check_relaxation, compute_dtype
from .relax import RELAXATIONS
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
# The defaults are the paper's settings (ImageNet-1K: splitter selection, logistic_phi, lambda .5,
# inverse temperature 1, m 16; CIFAR-100 from scratch ranks its 100 classes), those of the command line.
METHOD, DISTRIBUTION, ART_LAMBDA = "splitter_selection", "logistic_phi", 0.5
AUTO = "auto"  # m='auto': rank every class up to RANK_ALL classes, else preselect AUTO_M of them
RANK_ALL, AUTO_M = 100, 16
SLOW_CLASSES = 1000  # m=None at this many classes or more warns: ranking them all costs 7-450x CE


class _Config(NamedTuple):
    """Validated hyper-parameters of the loss, plain values only. `rank_weights[r]` weighs P[r, y]
    (the P_K(1) part is left out in the 'sm' and 'smce' modes, where softmax supplies it);
    `options` are the keyword options of the relaxation `RELAXATIONS[method]`."""

    p_k: tuple[float, ...]
    rank_weights: tuple[float, ...]
    log_rank_weights: tuple[float, ...]
    scaled_rank_weights: tuple[float, ...]  # the weights times 1 - 2 eps: p (1 - 2 eps) + eps in one product
    ranked: bool  # whether any rank term needs the relaxation
    method: str
    beta: float
    m: int | str | None
    options: tuple[tuple[str, object], ...]
    top1_mode: str
    eps: float
    label_smoothing: float


def check_p_k(p_k: Sequence[float] | Tensor) -> tuple[float, ...]:
    """P_K as a tuple of floats: finite, non-negative, summing to 1 within 1e-4."""
    if isinstance(p_k, Tensor):
        if p_k.dim() != 1:
            raise ValueError(f"p_k must be a 1-D sequence of probabilities, got shape {tuple(p_k.shape)}")
        p_k = p_k.tolist()
    if isinstance(p_k, (str, bytes)) or not isinstance(p_k, Iterable):
        raise TypeError(f"p_k must be a sequence of probabilities, got {p_k!r}")
    values = tuple(check_real(p, "p_k (each probability)") for p in p_k)
    if not values:
        raise ValueError("p_k must hold at least one probability, got an empty sequence")
    if any(not math.isfinite(p) or p < 0 for p in values):
        raise ValueError(f"p_k must hold finite non-negative probabilities, got {list(values)}")
    if abs(sum(values) - 1) > 1e-4:
        raise ValueError(f"p_k must sum to 1 (within 1e-4), got {list(values)} summing to {sum(values)}")
    return values


def make_config(
    p_k: Sequence[float] | Tensor,
    method: str = METHOD,
    inverse_temperature: float = 1.0,
    m: int | str | None = AUTO,
    distribution: str = DISTRIBUTION,
    art_lambda: float = ART_LAMBDA,
    top1_mode: str = "sm",
    eps: float = DEFAULT_EPS,
    label_smoothing: float = 0.0,
) -> _Config:
    """Validate the loss's hyper-parameters; ValueError or TypeError naming the argument."""
    p_k = check_p_k(p_k)
    check_choice(method, "method", LOSS_METHODS)
    check_choice(top1_mode, "top1_mode", TOP1_MODES)
    eps = check_real(eps, "eps", 0, 0.5, high_open=True)
    label_smoothing = check_real(label_smoothing, "label_smoothing", 0, 1)
    if method == "softmax":
        if p_k[0] < 1 - 1e-4:
            raise ValueError(
                f"method='softmax' is plain cross-entropy and needs p_k = [1, 0, ...], got {list(p_k)}"
            )
        beta, options = 1.0, ()
    else:
        beta = check_relaxation(method, inverse_temperature, distribution, art_lambda)
        given = {"distribution": distribution, "art_lambda": float(art_lambda)}
        options = tuple((name, given[name]) for name in RELAXATIONS[method].options)
    if m is not None and m != AUTO:
        if check_int(m, "m (an int, None or 'auto')") <= len(p_k):
            raise ValueError(f"m must be greater than K = len(p_k) = {len(p_k)}, got m = {m}")
        m = int(m)
    tail = [sum(p_k[r:]) for r in range(len(p_k))]  # w_r = P(K >= r + 1)
    if top1_mode != "sort":
        tail[0] = tail[1] if len(p_k) > 1 else 0.0
    return _Config(p_k, tuple(tail), tuple(math.log(w) if w > 0 else -math.inf for w in tail),
                   tuple(w * (1 - 2 * eps) for w in tail), any(tail), method, beta, m, options, top1_mode,
                   eps, label_smoothing)


HYPER_PARAMETERS = ("p_k", "method", "inverse_temperature", "m", "distribution", "art_lambda", "top1_mode",
                    "eps", "label_smoothing")  # make_config's arguments, in its order
_CONFIGS: dict[str, _Config] = {}  # validated configurations by `config_key`, the oldest dropped first
CACHED_CONFIGS = 1024


def config_key(values: tuple) -> str:
    """The key of make_config's arguments: their repr, with p_k given as a list or 1-D tensor as a tuple.
    A string, because torch.compile specialises on strings; a float attribute that changes between
    calls it would turn into a symbolic input. (Once warm, a compiled loss does not recompile when
    other configurations are added.)"""
    p_k = values[0]
    if isinstance(p_k, list) or (isinstance(p_k, Tensor) and p_k.dim() == 1):
        p_k = tuple(p_k.tolist() if isinstance(p_k, Tensor) else p_k)
    return repr((p_k, *values[1:]))


def config_of(*values: object) -> _Config:
    """`make_config(*values)`, validated once per tuple of values (an annealing schedule's each);
    under torch.compile traced into constants."""
    if torch.compiler.is_compiling():
        return make_config(*values)
    key = config_key(values)
    cfg = _CONFIGS.get(key)
    if cfg is None:
        cfg = _CONFIGS[key] = make_config(*values)
        if len(_CONFIGS) > CACHED_CONFIGS:
            del _CONFIGS[next(iter(_CONFIGS))]
    return cfg


def _slow_warning(cfg: _Config, classes: int) -> str | None:
    """The warning of a call that ranks every class (m=None) of many, or None."""
    if cfg.m is not None or not cfg.ranked or classes < SLOW_CLASSES or torch.compiler.is_compiling():
        return None
    return (f"TopKCrossEntropyLoss(method={cfg.method!r}, m=None) ranks all {classes} classes, which costs "
            f"up to hundreds of times cross-entropy (bitonic: about 200x at 1,000 classes); m={AUTO_M} "
            f"(or the default m='auto') ranks the target and the {AUTO_M - 1} highest other classes, as the "
            f"paper does at ImageNet scale")


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
    """Logits of the J target classes followed by the m-J highest other classes, descending; on the
    CPU, ties among them by ascending class index (see `_ties_by_index`).  [M, C], [M, J] -> [M, m]"""
    j, cpu = classes.shape[1], eager_cpu(logits)
    width = m + cpu  # on the CPU one class more: the best one left out, which shows a tie at the edge
    pad = _padding(logits, width)
    with torch.no_grad():
        if j == 1 and not pad and cpu:
            # No full-size copy, which costs more than a few small ops on the CPU: column i of the
            # others is column i of the top classes, or i + 1 once the target has been passed.
            top = logits.topk(width, dim=1).indices
            passed = (top[:, :m] == classes).cumsum(dim=1)
            others = top.gather(1, passed + _constant(tuple(range(m)), top, torch.long))
        elif j == 1:  # the target first (+inf), then the highest others
            key = F.pad(logits, (0, pad), value=-torch.inf) if pad else logits.clone()
            others = _top_indices(key.scatter_(1, classes, torch.inf), width, logits.shape[1])[:, 1:]
        else:  # several targets, in their order, then the others among the top classes
            key = F.pad(logits, (0, pad), value=-torch.inf) if pad else logits
            top = _top_indices(key, width, logits.shape[1])
            is_target = (top[:, :, None] == classes[:, None, :]).any(-1)
            others = top.gather(1, is_target.to(torch.uint8).argsort(dim=1, stable=True)[:, : width - j])
        kept = torch.cat([classes, others[:, : m - j]], dim=1)
        if cpu:
            kept = _ties_by_index(logits, classes, kept, others[:, m - j :])
    return logits.gather(1, kept)


def _ties_by_index(logits: Tensor, classes: Tensor, kept: Tensor, left_out: Tensor) -> Tensor:
    """`kept` with its other classes chosen and ordered by descending logit and, among equal logits,
    by ascending class index, as the class-sharded loss merges them (`torch.topk` promises no order
    among ties). `left_out [M, 1]` is the best other class not kept: a tie at the edge shows there.
    Only rows with tied logits pay for a sort of the row. CPU only: on a device the ties stay in
    `topk`'s order, so that nothing is read back.  [M, C], [M, J], [M, m], [M, 1] -> [M, m]"""
    j = classes.shape[1]
    values, edge = logits.gather(1, kept[:, j:]), logits.gather(1, left_out)
    tied = (values[:, 1:] == values[:, :-1]).any(1) | (edge[:, 0] == values[:, -1])
    if not bool(tied.any()):
        return kept
    order = logits.argsort(dim=1, descending=True, stable=True)
    is_target = (order[:, :, None] == classes[:, None, :]).any(-1)
    others = order.gather(1, is_target.to(torch.uint8).argsort(dim=1, stable=True)[:, : kept.shape[1] - j])
    return torch.cat([classes, others], dim=1)


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


def _kept_classes(cfg: _Config, classes: int, j: int) -> int | None:
    """The m of a call with `classes` logits and `j` target classes per row; None ranks every class.
    m='auto' ranks every class up to RANK_ALL of them, else the targets and AUTO_M - 1 others (more
    where j + K exceeds AUTO_M)."""
    if cfg.m != AUTO:
        return cfg.m
    return None if classes <= RANK_ALL else max(AUTO_M, j + len(cfg.p_k))


def class_losses(logits: Tensor, classes: Tensor, cfg: _Config) -> Tensor:
    """L(s, c) for the classes `[M, J]` of each row of logits `[M, C]` -> `[M, J]` in the compute
    dtype; +inf where the class's logit is -inf."""
    k = len(cfg.p_k)
    if logits.shape[1] < k:
        raise ValueError(f"p_k has K = {k} entries but the input has only C = {logits.shape[1]} classes")
    j = classes.shape[1]
    scores = logits.to(compute_dtype(logits.dtype))
    m = _kept_classes(cfg, scores.shape[1], j)
    preselected = m is not None and m < scores.shape[1]
    if preselected:
        if j >= m:
            raise ValueError(
                f"m = {m} must exceed the number of target classes of every row, got a row with {j} (of "
                f"class probabilities, the classes above the row's smallest probability): give m > {j}, "
                f"m='auto' (m adapts to the rows) or m=None (every class ranked)")
        scores = _preselect(scores, classes, m)  # the targets are its first j columns
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
    ranks = None
    if cfg.ranked:
        item_ranks = RELAXATIONS[cfg.method].item_ranks
        ranks = item_ranks(scores.contiguous(), label, k, beta=cfg.beta, log=log_space, **dict(cfg.options))
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
        if cfg.label_smoothing > 0 or t.uniform is not None:
            smooth = t.smoothing(_smoothing_term(scores, t.classes[:, 0], weight))
            if t.uniform is not None:  # a probability row's uniform floor is label smoothing
                rows = rows + torch.where(t.uniform > 0, t.uniform * smooth, 0.0)
            if cfg.label_smoothing > 0:
                rows = (1 - cfg.label_smoothing) * rows + cfg.label_smoothing * smooth
    return reduce(rows, reduction, shape, t.count)


def topk_cross_entropy(
    input: Tensor,
    target: Tensor,
    p_k: Sequence[float] | Tensor,
    method: str = METHOD,
    inverse_temperature: float = 1.0,
    m: int | str | None = AUTO,
    distribution: str = DISTRIBUTION,
    art_lambda: float = ART_LAMBDA,
    top1_mode: str = "sm",
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    eps: float = DEFAULT_EPS,
) -> Tensor:
    """Functional form of `TopKCrossEntropyLoss`; see there for the arguments. Its configuration is
    validated once per tuple of values; the warning of m=None at many classes comes once per call site."""
    cfg = config_of(p_k, method, inverse_temperature, m, distribution, art_lambda, top1_mode, eps,
                    label_smoothing)
    message = _slow_warning(cfg, input.shape[-1 if input.dim() == 1 else 1]) if m is None else None
    if message:
        warnings.warn(message, stacklevel=2)
    return topk_loss(input, target, cfg, weight, ignore_index, reduction)


class TopKCrossEntropyLoss(torch.nn.Module):
    """Differentiable top-k cross-entropy, a drop-in replacement for `torch.nn.CrossEntropyLoss`.

    Args:
        p_k: probabilities P_K(k) for k = 1..K (sums to 1), e.g. `[.5, 0, 0, 0, .5]` for half
            top-1, half top-5.
        method: a relaxation of `softtopk.METHODS`, or 'softmax' (plain cross-entropy, only with
            p_k = [1, 0, ...]).
        inverse_temperature: steepness of the relaxation.
        m: rank only the target classes and the highest other classes, m in all (an int > K); None
            ranks every class (and warns once from 1,000 classes on, where that costs tens to
            hundreds of times cross-entropy); 'auto' ranks every class up to 100 of them, else
            m = max(16, J + K) with J the target classes of a row. An int m >= C ranks every class.
        distribution, art_lambda: comparator sigmoid of the sorting networks (see `rank_probabilities`)
            and the lambda of 'logistic_phi'.
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

    The defaults are the paper's settings and those of the command line (`softtopk finetune/train`):
    splitter selection with 'logistic_phi', lambda .5 and inverse temperature 1 (ImageNet-1K), all
    classes ranked up to 100 (CIFAR-100 from scratch) and m = 16 above (ImageNet-1K; the command line
    passes the paper's m of each setting explicitly). They train well (docs/results.md) and cost
    about 1-5x cross-entropy at 1,000 classes and less than it at 100,000, where the original's
    defaults (bitonic, 'cauchy', lambda .25, every class ranked) cost about 200x at 1,000 classes; a
    call that ranks 1,000 classes or more with m=None warns, once per instance. To reproduce difftopk
    give its settings explicitly. `rank_probabilities` and `soft_sort` keep 'cauchy' and lambda .25:
    they sort, they do not train.

    Every argument is a plain attribute (p_k is kept as a tuple): one set after construction, such
    as `loss_fn.inverse_temperature = 4.0` or `loss_fn.label_smoothing = 0.05` in an annealing
    schedule, takes effect at the next call, where it is validated with the constructor's error (once
    per assignment); the repr shows the current values. Under torch.compile a change recompiles (the
    configuration is found by a string key, never through a float that dynamo would make symbolic).
    Assign a new p_k rather than changing one in place. The module holds names and
    numbers only (the relaxation is looked up by name when the loss is computed), so it pickles,
    deep-copies, `torch.save`s and goes to `torch.multiprocessing` workers.

    Shape:
        input `[N, C]` or `[N, C, d1, ...]` (or `[C]`) logits, `-inf` for masked classes; target
        `[N]` or `[N, d1, ...]` (or `[]`) class indices, or the input's shape: class probabilities
        or multi-label sets (bool); output a scalar, or the shape of the predictions with
        reduction='none'.

    Class probabilities q (label smoothing, mixup, cutmix, distillation): the loss is linear in each
    row, so rows that do not sum to 1 are taken as `CrossEntropyLoss` takes them (the row's loss
    scales with its sum); negative or non-finite entries are an error. A row's smallest entry is
    its uniform floor: the row is `(q - min q) + C min q * uniform`, and the floor is label smoothing,
    `sum_c (q_c - min q) L(s, c) + C min q * H(uniform, softmax(s))` -- so timm's Mixup rows
    `(1 - e) mix + e / C` equal the sparse mixture with `label_smoothing=e`, and only the classes
    above the floor are ranked (for 'softmax', and p_k = [1] with eps = 0, it is cross-entropy).
    """

    def __init__(
        self,
        p_k: Sequence[float] | Tensor,
        method: str = METHOD,
        inverse_temperature: float = 1.0,
        m: int | str | None = AUTO,
        distribution: str = DISTRIBUTION,
        art_lambda: float = ART_LAMBDA,
        top1_mode: str = "sm",
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        eps: float = DEFAULT_EPS,
    ) -> None:
        super().__init__()
        self.p_k = check_p_k(p_k)
        self.method, self.inverse_temperature, self.m = method, inverse_temperature, m
        self.distribution, self.art_lambda, self.top1_mode = distribution, art_lambda, top1_mode
        self.label_smoothing, self.eps = label_smoothing, eps
        self._key, self._validated = "", None
        self.config()  # the constructor's errors
        check_reduction(reduction)
        check_weight(weight)
        self.register_buffer("weight", weight)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = reduction
        self.warned = False  # of m=None at many classes

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name in HYPER_PARAMETERS and "_key" in self.__dict__:
            self.__dict__["_key"], self.__dict__["_validated"] = "", None
            with contextlib.suppress(TypeError, ValueError):  # raised by the next call
                self.config()

    def config(self) -> _Config:
        """The validated hyper-parameters of the current attributes. Outside torch.compile they are
        validated once per assignment and `_key` names them in `_CONFIGS`, where a compiled call
        finds them by that string: it reads no float attribute (see `config_key`)."""
        if torch.compiler.is_compiling():
            cfg = _CONFIGS.get(self._key)
            return cfg if cfg is not None else config_of(*(getattr(self, n) for n in HYPER_PARAMETERS))
        cfg = self.__dict__.get("_validated")
        if cfg is None:
            values = tuple(getattr(self, name) for name in HYPER_PARAMETERS)
            cfg = config_of(*values)
            self.__dict__["_key"], self.__dict__["_validated"] = config_key(values), cfg
        return cfg

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        cfg = self.config()
        if self.m is None and not self.warned and not torch.compiler.is_compiling():
            message = _slow_warning(cfg, input.shape[-1 if input.dim() == 1 else 1])
            if message:
                warnings.warn(message, stacklevel=4)  # the caller of the module
                self.warned = True
        return topk_loss(input, target, cfg, self.weight, self.ignore_index, self.reduction)

    def extra_repr(self) -> str:
        return (f"p_k={list(self.p_k)}, method={self.method!r}, "
                f"inverse_temperature={self.inverse_temperature}, "
                f"m={self.m!r}, distribution={self.distribution!r}, art_lambda={self.art_lambda}, "
                f"top1_mode={self.top1_mode!r}, ignore_index={self.ignore_index}, "
                f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}, eps={self.eps}")
