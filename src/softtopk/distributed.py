"""The top-k cross-entropy with the classes sharded over the processes of a torch.distributed group
(vocab-parallel, as Megatron's cross-entropy): rank r holds the logits of the r-th contiguous block
of the classes, `local_input [N, C_r]`, and never the whole `[N, C]`.

With top-m preselection the relaxation needs only the m candidates of each row (the target first,
then the highest other classes), and from all classes only the log-sum-exp and, with label
smoothing, the weighted sum of the logits. So every rank sends its block's top-m values and class
indices (an all-gather of `[world, N, m]`) and a few numbers per row (all-reduces of `[N]`), whatever
C is; every rank merges the same candidates, computes the same loss on `[N, m]`, and its backward
writes only its own block of the gradient, without communication.

The loss is replicated: every rank returns the same value, and `backward()` on every rank gives each
rank its block of the gradient of that one loss (do not average it over the ranks again).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist

from ._checks import check_scores, eager_cpu
from ._conventions import check_ignore_index, check_reduction, check_weight, reduce
from .linear_loss import (
    ChunkedHeadLoss,
    check_chunk_size,
    check_head,
    default_chunk,
    flatten_target,
    mean_count,
)
from .losses import METHOD, make_config, topk_cross_entropy
from .targets import index_targets

Tensor = torch.Tensor

_SENT_BYTES: list[int] = []  # one counter while `count_bytes` is active


@contextlib.contextmanager
def count_bytes() -> Iterator[list[int]]:
    """Counts the bytes this process contributes to the collectives of the sharded loss: yields a
    one-element list whose entry grows with every collective inside the block."""
    counter = [0]
    _SENT_BYTES.append(0)
    try:
        yield counter
    finally:
        counter[0] = _SENT_BYTES.pop()


def _sent(tensor: Tensor) -> None:
    if _SENT_BYTES:
        _SENT_BYTES[-1] += tensor.numel() * tensor.element_size()


def _all_reduce(tensor: Tensor, op: dist.ReduceOp, group) -> Tensor:
    _sent(tensor)
    dist.all_reduce(tensor, op=op, group=group)
    return tensor


def _all_gather(tensor: Tensor, group) -> Tensor:
    """`[...]` of every rank -> `[world, ...]`, in rank order."""
    _sent(tensor)
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.stack(parts)


_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_LAYOUTS: dict[tuple, tuple[int, int]] = {}


def _block(like: Tensor, rows: int, width: int, group) -> tuple[int, int]:
    """(offset of this rank's first class, number of classes C) of a block of `width` classes, after
    checking that the ranks agree on the number of rows and on `like`'s dtype. Exchanged on every call
    on the CPU; on a device, once per shape and dtype (the exchange reads its result back on the host)."""
    key = (group, rows, width, like.dtype, like.device)
    if not eager_cpu(like) and key in _LAYOUTS:
        return _LAYOUTS[key]
    header = torch.tensor([rows, width, _DTYPES.index(like.dtype)], device=like.device)
    everyone = _all_gather(header, group).tolist()
    if len({r[0] for r in everyone}) > 1:
        raise ValueError(f"the input must have the same number of rows N on every rank, got "
                         f"{[r[0] for r in everyone]} (ranks in order)")
    if len({r[2] for r in everyone}) > 1:
        raise ValueError(f"the input must have the same dtype on every rank, got "
                         f"{[str(_DTYPES[r[2]]) for r in everyone]} (ranks in order)")
    widths = [r[1] for r in everyone]
    layout = sum(widths[: dist.get_rank(group)]), sum(widths)
    if not eager_cpu(like):  # the CPU exchanges every call: nothing to keep
        _LAYOUTS[key] = layout
    return layout


class _LogSumExp(torch.autograd.Function):
    """log sum_c exp(s_c) over the classes of every rank `[N]`, from this rank's block `[N, C_r]`;
    the backward gives this block's share, softmax(s) on its classes."""

    @staticmethod
    def forward(ctx, local: Tensor, group) -> Tensor:
        top = _all_reduce(local.amax(1) if local.shape[1] else local.new_full(local.shape[:1], -torch.inf),
                          dist.ReduceOp.MAX, group)
        shift = torch.where(torch.isfinite(top), top, 0.0)
        total = _all_reduce((local - shift[:, None]).exp().sum(1), dist.ReduceOp.SUM, group)
        lse = shift + total.log()
        ctx.save_for_backward(local, lse)
        return lse

    @staticmethod
    def backward(ctx, grad: Tensor):
        local, lse = ctx.saved_tensors
        share = (local - lse[:, None]).exp().nan_to_num(0.0)  # a row with no finite logit: 0
        return grad[:, None] * share, None


class _Summed(torch.autograd.Function):
    """The sum over the ranks of `value [N]`; as every rank computes the same loss from it, the
    gradient of each rank's part is the gradient of the sum."""

    @staticmethod
    def forward(ctx, value: Tensor, group) -> Tensor:
        return _all_reduce(value.clone(), dist.ReduceOp.SUM, group)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def _own_target_logit(local: Tensor, target: Tensor, offset: int) -> Tensor:
    """The target's logit where this rank holds the target's class, else 0.  [N, C_r], [N] -> [N]"""
    width = local.shape[1]
    if not width:
        return local.new_zeros(local.shape[0])
    index = (target - offset).clamp(0, width - 1)[:, None]
    owned = (target >= offset) & (target < offset + width)
    return torch.where(owned, local.gather(1, index)[:, 0], 0.0)


class _Candidates(torch.autograd.Function):
    """The logits of every row's m candidates `[N, m]`: the target first, then the m - 1 highest
    other classes of all ranks in descending order, ties by ascending class index; and their class
    indices `[N, m]`. The backward scatters the candidates' gradient into this rank's block."""

    @staticmethod
    def forward(ctx, local: Tensor, target: Tensor, m: int, offset: int, classes: int, group):
        rows, width = local.shape
        values, index = local.topk(min(m, width), dim=1)
        if width < m:  # pad to m with entries that sort after every class, -inf ones included
            values = torch.cat([values, values.new_full((rows, m - width), -torch.inf)], 1)
            index = torch.cat([index, index.new_full((rows, m - width), classes - offset)], 1)
        target_logit = _all_reduce(_own_target_logit(local, target, offset), dist.ReduceOp.SUM, group)
        values = _all_gather(values, group).permute(1, 0, 2).reshape(rows, -1)
        index = (_all_gather(index + offset, group)).permute(1, 0, 2).reshape(rows, -1)
        values = values.masked_fill(index == target[:, None], -torch.inf)
        index = index.masked_fill(index == target[:, None], classes)
        by_index = index.argsort(dim=1, stable=True)
        values, index = values.gather(1, by_index), index.gather(1, by_index)
        order = values.argsort(dim=1, descending=True, stable=True)[:, : m - 1]
        candidates = torch.cat([target_logit[:, None], values.gather(1, order)], 1)
        candidate_index = torch.cat([target[:, None], index.gather(1, order)], 1)
        ctx.save_for_backward(candidate_index)
        ctx.offset, ctx.width = offset, width
        ctx.mark_non_differentiable(candidate_index)
        return candidates, candidate_index

    @staticmethod
    def backward(ctx, grad: Tensor, _):
        (candidate_index,) = ctx.saved_tensors
        local = candidate_index - ctx.offset
        here = (local >= 0) & (local < ctx.width)
        out = grad.new_zeros(grad.shape[0], ctx.width)
        out.scatter_add_(1, local.clamp(0, max(ctx.width - 1, 0)), torch.where(here, grad, 0.0))
        return out, None, None, None, None, None


def vocab_parallel_topk_cross_entropy(
    local_input: Tensor,
    target: Tensor,
    p_k: Sequence[float] | Tensor,
    *,
    group: dist.ProcessGroup | None = None,
    method: str = METHOD,
    m: int | None = None,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    **kwargs: object,
) -> Tensor:
    """`topk_cross_entropy` of the logits whose classes are split over the ranks of `group`.

    Args:
        local_input: `[N, C_r]` logits of this rank's classes: rank r holds the r-th contiguous block
            of the C classes in rank order (blocks may differ in size, and be empty).
        target: `[N]` class indices in [0, C) or `ignore_index`, the same on every rank.
        p_k: P_K(k) for k = 1..K, as in `topk_cross_entropy`.
        group: the process group (default: the world).
        method: 'softmax' (vocab-parallel cross-entropy) or a relaxation of `softtopk.METHODS`.
        m: the top-m preselection, required for a relaxation: an int with K < m < C.
        weight: optional per-class weights `[C]` of all classes, the same on every rank.
        ignore_index, reduction, label_smoothing, and the other keywords (`inverse_temperature`,
            `distribution`, `art_lambda`, `top1_mode`, `eps`): as in `topk_cross_entropy`.

    Returns:
        The loss of `topk_cross_entropy(torch.cat(blocks, dim=1), target, p_k, ...)`, the same on
        every rank (the shape `[N]` with reduction='none'); its backward gives each rank its block
        of the gradient. Candidates with equal logits are chosen and ordered by ascending class
        index, as the single-process loss does on the CPU (on a GPU it keeps `torch.topk`'s order among
        exact ties, so there the gradient of tied classes may land on another of them). Communication
        per call: O(N * m * world) numbers, independent of C; on a GPU no value is read back, but the
        block sizes once per shape.
    """
    check_scores(local_input, "local_input")
    if local_input.dim() != 2:
        raise ValueError(f"local_input must have shape [N, C_r], got {tuple(local_input.shape)}")
    # Every argument checked by the library before any collective, so that bad input fails on every rank.
    make_config(p_k, method, m=m, label_smoothing=label_smoothing, **kwargs)
    check_reduction(reduction)
    check_ignore_index(ignore_index)
    check_weight(weight)
    if method != "softmax" and not isinstance(m, int):
        raise ValueError(f"m is required with a relaxation, as an int: the sharded loss ranks the top-m "
                         f"candidates of all classes (e.g. m=16), never all of them; got m = {m!r}")
    group = group or dist.group.WORLD
    offset, classes = _block(local_input, *local_input.shape, group)
    if method != "softmax" and m >= classes:
        raise ValueError(f"m must be smaller than the number of classes C = {classes}, got m = {m} (with "
                         f"m >= C every class is ranked in its own order, which the sharded loss cannot see)")
    check_weight(weight, classes)
    if not isinstance(target, Tensor) or target.shape != local_input.shape[:1]:
        raise ValueError(f"target must be a tensor of class indices of shape [{local_input.shape[0]}]")
    scores = local_input.to(torch.float64 if local_input.dtype == torch.float64 else torch.float32)
    t = index_targets(target.long(), classes, weight, ignore_index, scores.dtype)
    label = t.classes[:, 0]
    with torch.autocast(scores.device.type, enabled=False):
        lse = _LogSumExp.apply(scores, group) if method == "softmax" or label_smoothing > 0 else None
        if method == "softmax":
            losses = lse - _Summed.apply(_own_target_logit(scores, label, offset), group)
        else:
            candidates = _Candidates.apply(scores, label, m, offset, classes, group)[0]
            first = torch.zeros_like(label)  # the target is the first candidate
            losses = topk_cross_entropy(candidates, first, p_k, method=method, m=m, reduction="none",
                                        **kwargs)
        rows = t.rows(losses[:, None])
        if label_smoothing > 0:
            smooth = t.smoothing(_smoothing_term(scores, lse, weight, offset, classes, group))
            rows = (1 - label_smoothing) * rows + label_smoothing * smooth
    return reduce(rows, reduction, tuple(target.shape), t.count)


def _smoothing_term(scores: Tensor, lse: Tensor, weight: Tensor | None, offset: int, classes: int,
                    group) -> Tensor:
    """H(u, softmax(s)) = (lse(s) sum_c w_c - sum_c w_c s_c) / C over all classes, from this
    rank's block and the log-sum-exp `lse [N]` of all classes.  [N, C_r] -> [N]"""
    if weight is None:
        return lse - _Summed.apply(scores.sum(1), group) / classes
    w = weight.to(scores.dtype)
    local = w[offset : offset + scores.shape[1]]
    return (lse * w.sum() - _Summed.apply(scores @ local, group)) / classes


class _SummedGradient(torch.autograd.Function):
    """The identity, whose backward sums the gradient over the ranks: the input of a class-sharded
    head reaches every rank's block, so its gradient is the sum of the blocks' (Megatron's convention)."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _all_reduce(grad.contiguous(), dist.ReduceOp.SUM, ctx.group), None


def vocab_parallel_linear_topk_cross_entropy(
    input: Tensor,
    local_weight: Tensor,
    target: Tensor,
    p_k: Sequence[float] | Tensor,
    local_bias: Tensor | None = None,
    *,
    group: dist.ProcessGroup | None = None,
    chunk_size: int | None = None,
    class_weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    **kwargs: object,
) -> Tensor:
    """`vocab_parallel_topk_cross_entropy(F.linear(input, local_weight, local_bias), ...)` in row chunks,
    without the logits: the class-sharded form of `linear_topk_cross_entropy`.

    Args:
        input: hidden states `[..., H]`, the same on every rank (N rows in all).
        local_weight: `[C_r, H]`, this rank's contiguous block of the head's rows, in rank order;
            local_bias: `[C_r]`.
        target: class indices `[...]` of all C classes, the same on every rank.
        chunk_size: rows at a time, the same on every rank (default: from C and the number of ranks).
        class_weight: per-class weights `[C]` of all classes; p_k and the other keywords as in
            `vocab_parallel_topk_cross_entropy` (`m` is required for a relaxation).

    Returns the loss of the whole head, the same on every rank. Its backward gives each rank the
    gradient of its own weight and bias block and, for `input`, the gradient summed over the ranks (as
    Megatron's and Cut Cross-Entropy's vocab-parallel heads do): every rank holds the full gradient of
    its replicated input.
    """
    check_head(input, local_weight, local_bias)
    chunk_size = check_chunk_size(chunk_size)
    check_reduction(reduction)
    check_ignore_index(ignore_index)
    group = group or dist.group.WORLD
    batch_shape = tuple(input.shape[:-1])
    flat_target = flatten_target(target, batch_shape, local_weight.shape[0])
    if flat_target.dim() != 1:
        raise TypeError("target must hold class indices: the sharded loss takes no dense targets")
    x = input.reshape(-1, input.shape[-1])
    _, classes = _block(x, x.shape[0], local_weight.shape[0], group)
    check_weight(class_weight, classes)
    chunk = chunk_size or default_chunk(x.shape[0], classes / dist.get_world_size(group))

    def loss(logits: Tensor, rows: Tensor) -> Tensor:
        return vocab_parallel_topk_cross_entropy(
            logits, rows, p_k, group=group, weight=class_weight, ignore_index=ignore_index,
            reduction="sum" if reduction == "mean" else reduction, **kwargs)

    def count() -> Tensor:
        dtype = torch.float64 if local_weight.dtype == torch.float64 else torch.float32
        return mean_count(flat_target, classes, class_weight, ignore_index, dtype)

    shared = _SummedGradient.apply(x, group) if x.requires_grad else x
    out = ChunkedHeadLoss.apply(shared, local_weight, local_bias, flat_target, chunk, loss, reduction,
                                        count, torch.is_grad_enabled())
    return out.reshape(batch_shape) if reduction == "none" else out
