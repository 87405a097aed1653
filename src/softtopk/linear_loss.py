"""The top-k cross-entropy loss of a linear classifier head, computed from the hidden states without
ever holding the `[N, C]` logits or their gradient: `topk_cross_entropy(F.linear(x, W, b), y, ...)`
row chunk by row chunk.

Each chunk's logits are computed, its loss and logit gradient taken with the public loss, and the
gradients of x, W and b accumulated at once (three matmuls a chunk, as unfused); only a chunk's
logits and their gradient live at a time. 'mean' divides the summed chunk losses by the batch's own
denominator, computed once. With reduction='none' the forward pass stores nothing but its inputs and
the backward pass recomputes each chunk with its rows' output gradients (one more matmul and loss).

The head's matrix is `weight`, as in `F.linear`; the loss's per-class weights are `class_weight`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ._checks import check_int, check_scores
from ._conventions import check_ignore_index, check_reduction, check_weight
from .losses import TopKCrossEntropyLoss, topk_cross_entropy
from .targets import checked_indices

Tensor = torch.Tensor
CHUNK_ELEMENTS = 2**23  # default chunk: at most this many logits (32 MiB in float32), at least one row
CHUNKS = 4  # and at most a quarter of the rows: a chunk never holds more than a quarter of the logits


def check_head(input: object, weight: object, bias: object) -> None:
    check_scores(input, "input")
    if not isinstance(weight, Tensor) or not weight.is_floating_point():
        raise TypeError(f"weight must be a floating-point tensor [C, H], got {type(weight).__name__}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [C, H] (classes x hidden), got shape {tuple(weight.shape)}")
    if weight.shape[1] != input.shape[-1]:  # type: ignore[union-attr]
        raise ValueError(f"input [..., H] and weight [C, H] must agree on H: input has H = "
                         f"{input.shape[-1]}, weight {tuple(weight.shape)}")  # type: ignore[union-attr]
    if bias is None:
        return
    if not isinstance(bias, Tensor) or not bias.is_floating_point():
        raise TypeError(f"bias must be None or a floating-point tensor [C], got {type(bias).__name__}")
    if tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape [C] = ({weight.shape[0]},), got {tuple(bias.shape)}")


def check_chunk_size(chunk_size: object) -> int | None:
    """None or a positive int: the rows of logits computed at a time."""
    return None if chunk_size is None else check_int(chunk_size, "chunk_size", low=1)


def default_chunk(rows: int, classes: float) -> int:
    """The rows of a chunk by default: at most `CHUNK_ELEMENTS` logits of `classes` each and at most
    `1 / CHUNKS` of the `rows`, at least one row."""
    return max(1, min(int(CHUNK_ELEMENTS // classes), -(-rows // CHUNKS)))


def flatten_target(target: object, batch_shape: tuple[int, ...], classes: int) -> Tensor:
    """Class indices `[...]` -> `[N]`; probabilities or booleans `[..., C]` -> `[N, C]`."""
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    dense = target.is_floating_point() or target.dtype == torch.bool
    expected = (*batch_shape, classes) if dense else batch_shape
    if tuple(target.shape) != expected:
        kind = "probabilities or booleans" if dense else "class indices"
        raise ValueError(f"target of {kind} must have shape {expected} for input of batch shape "
                         f"{batch_shape} and C = {classes}, got {tuple(target.shape)}")
    return target.reshape(-1, classes) if dense else target.reshape(-1)


def mean_count(target: Tensor, classes: int, class_weight: Tensor | None, ignore_index: int,
                dtype: torch.dtype) -> Tensor:
    """The denominator of 'mean' for the whole batch, as the loss counts it: the summed class weights
    of the index targets that are not ignored; the number of rows of probability targets; the summed
    mean class weights of the multi-label rows with a true class."""
    if target.dtype == torch.bool:
        count = target.sum(1)
        if class_weight is None:
            return (count > 0).sum().to(dtype)
        return ((target.to(dtype) @ class_weight.to(dtype)) / count.clamp_min(1)).sum()
    if target.is_floating_point():
        return torch.tensor(float(target.shape[0]), dtype=dtype, device=target.device)
    ignored, safe = checked_indices(target, classes, ignore_index)
    if class_weight is None:
        return (~ignored).sum().to(dtype)
    return class_weight.to(dtype)[safe[:, 0]].masked_fill(ignored, 0.0).sum()


class _Head:
    """The head's inputs, cast to the autocast dtype where autocast was on, and the gradients being
    accumulated (None for those not needed)."""

    def __init__(self, x: Tensor, weight: Tensor, bias: Tensor | None, amp: torch.dtype | None,
                 needs: tuple[bool, bool, bool]) -> None:
        inputs = (x, weight, bias)
        self.x, self.weight, self.bias = (t if t is None or amp is None else t.to(amp) for t in inputs)
        self.grads = [torch.zeros_like(t, dtype=_grad_dtype(t, amp)) if t is not None and need else None
                      for t, need in zip(inputs, needs, strict=True)]

    def logits(self, rows: slice) -> Tensor:
        return F.linear(self.x[rows], self.weight, self.bias)

    def accumulate(self, rows: slice, grad_logits: Tensor) -> None:
        """Add a chunk's logit gradient `[c, C]` into the gradients of x, W and b."""
        grad_x, grad_w, grad_b = self.grads
        if grad_x is not None:
            grad_x[rows] = grad_logits @ self.weight
        if grad_w is not None:
            if grad_w.dtype == grad_logits.dtype:
                grad_w.addmm_(grad_logits.T, self.x[rows])
            else:
                grad_w += grad_logits.T @ self.x[rows]
        if grad_b is not None:
            grad_b += grad_logits.sum(0, dtype=grad_b.dtype)


def _grad_dtype(t: Tensor, amp: torch.dtype | None) -> torch.dtype:
    """Gradients accumulate in the tensor's dtype, and in float32 under autocast."""
    return t.dtype if amp is None else torch.promote_types(t.dtype, torch.float32)


def _loss_input(logits: Tensor, amp: torch.dtype | None) -> Tensor:
    """Under autocast the loss runs in float32, as autocast runs `cross_entropy` and the loss itself."""
    return logits if amp is None else logits.float()


def _starts(target: Tensor, chunk: int) -> range:
    """The first row of every chunk; an empty batch is one empty chunk."""
    return range(0, max(target.shape[0], 1), chunk)


def _chunk_losses(head: _Head, target: Tensor, chunk: int, loss: Any, amp: torch.dtype | None
                  ) -> list[Tensor]:
    """Every chunk's loss, without gradients."""
    with torch.no_grad():
        return [loss(_loss_input(head.logits(slice(s, s + chunk)), amp), target[s: s + chunk])
                for s in _starts(target, chunk)]


def _chunk_pass(head: _Head, target: Tensor, chunk: int, loss: Any, amp: torch.dtype | None,
                grad_outputs: Tensor) -> list[Tensor]:
    """Every chunk's loss (detached), with its logit gradient for `grad_outputs` (a scalar, or one per
    row) accumulated into `head`."""
    values = []
    for start in _starts(target, chunk):
        rows = slice(start, start + chunk)
        with torch.no_grad():
            logits = head.logits(rows)
        leaf = _loss_input(logits, amp).requires_grad_()
        with torch.enable_grad():
            value = loss(leaf, target[rows])
            scale = grad_outputs if grad_outputs.dim() == 0 else grad_outputs[rows]
            (grad,) = torch.autograd.grad(value, leaf, scale.to(value.dtype))
        head.accumulate(rows, grad.to(logits.dtype))
        values.append(value.detach())
        del logits, leaf, grad
    return values


class ChunkedHeadLoss(torch.autograd.Function):
    """`loss(F.linear(x, weight, bias), target)` reduced over `chunk`-row chunks, with the gradients of
    x, weight and bias taken in the forward pass (scaled by the output's gradient in the backward),
    or for reduction='none' recomputed chunk by chunk in the backward pass. `loss(logits, rows)` is a
    chunk's loss ('sum' for 'mean', whose denominator `count()` is the whole batch's)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, chunk: int,
                loss: Any, reduction: str, count: Any, grad_enabled: bool) -> Tensor:
        device = x.device.type
        amp = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        needs = tuple(grad_enabled and need for need in ctx.needs_input_grad[:3])
        with torch.autocast(device, enabled=False):
            if reduction == "none":  # the backward pass recomputes each chunk with its rows' gradients
                ctx.save_for_backward(x, weight, bias, target)
                ctx.chunk, ctx.loss, ctx.amp, ctx.needs = chunk, loss, amp, needs
                head = _Head(x, weight, bias, amp, (False,) * 3)
                return torch.cat(_chunk_losses(head, target, chunk, loss, amp))
            head = _Head(x, weight, bias, amp, needs)
            scale = torch.ones((), device=x.device)
            if reduction == "mean":  # nothing counted: the loss selects every row away, a zero gradient
                denominator = count()
                scale = 1 / denominator
            # Gradients only where one is wanted (not under no_grad, nor for tensors without requires_grad).
            values = _chunk_pass(head, target, chunk, loss, amp, scale) if any(needs) else \
                _chunk_losses(head, target, chunk, loss, amp)
            total = torch.stack(values).sum()
            ctx.grads = head.grads
            return (total / denominator).to(total.dtype) if reduction == "mean" else total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        if hasattr(ctx, "grads"):
            if ctx.grads is None:
                raise RuntimeError("linear_topk_cross_entropy computes its gradients in the forward pass; "
                                   "they can be back-propagated once (no retain_graph)")
            grads, ctx.grads = ctx.grads, None
            scaled = (None if g is None else g.mul_(grad_output) for g in grads)
            return (*scaled, None, None, None, None, None, None)
        x, weight, bias, target = ctx.saved_tensors
        with torch.autocast(x.device.type, enabled=False):
            head = _Head(x, weight, bias, ctx.amp, ctx.needs)
            _chunk_pass(head, target, ctx.chunk, ctx.loss, ctx.amp, grad_output.reshape(-1))
        return (*head.grads, None, None, None, None, None, None)


def linear_topk_cross_entropy(
    input: Tensor,
    weight: Tensor,
    target: Tensor,
    p_k: Sequence[float] | Tensor,
    bias: Tensor | None = None,
    *,
    chunk_size: int | None = None,
    class_weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    **kwargs: Any,
) -> Tensor:
    """`topk_cross_entropy(F.linear(input, weight, bias), target, p_k, weight=class_weight, ...)` on
    the flattened rows, without holding the logits `[N, C]` or their gradient: `chunk_size` rows at a
    time (default: as many as keep a chunk's logits within 2^23 entries, 32 MiB in float32, and at
    most a quarter of the rows).

    Args:
        input: hidden states `[..., H]` (N rows in all); weight: the head's matrix `[C, H]`; bias: `[C]`.
        target: class indices `[...]` (the input's batch shape), or class probabilities (float) or
            multi-label sets (bool) `[..., C]`.
        p_k: and the keyword arguments `method`, `inverse_temperature`, `m`, `distribution`, `art_lambda`,
            `top1_mode`, `label_smoothing`, `eps`: as in `topk_cross_entropy`.
        class_weight: the loss's per-class weights `[C]` (its `weight`, renamed: `weight` is the head's).
        ignore_index, reduction: as in `topk_cross_entropy`; 'none' returns the target's batch shape.

    Under autocast the matmuls run in the autocast dtype and the loss in float32. The gradients are
    computed in the forward pass (for 'mean' and 'sum'; 'none' recomputes them in the backward pass)
    and can be back-propagated once. Under torch.compile the call runs eagerly, as a graph break.
    """
    check_head(input, weight, bias)
    chunk_size = check_chunk_size(chunk_size)
    check_reduction(reduction)
    check_ignore_index(ignore_index)
    classes = weight.shape[0]
    check_weight(class_weight, classes)
    batch_shape = tuple(input.shape[:-1])
    flat_target = flatten_target(target, batch_shape, classes)
    x = input.reshape(-1, input.shape[-1])
    chunk = chunk_size or default_chunk(x.shape[0], classes)

    def loss(logits: Tensor, rows: Tensor) -> Tensor:
        return topk_cross_entropy(logits, rows, p_k, weight=class_weight, ignore_index=ignore_index,
                                  reduction="sum" if reduction == "mean" else reduction, **kwargs)

    def count() -> Tensor:
        dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
        return mean_count(flat_target, classes, class_weight, ignore_index, dtype)

    out = ChunkedHeadLoss.apply(x, weight, bias, flat_target, chunk, loss, reduction, count,
                                        torch.is_grad_enabled())
    return out.reshape(batch_shape) if reduction == "none" else out


class LinearTopKCrossEntropyLoss(torch.nn.Module):
    """`TopKCrossEntropyLoss` on the outputs of a linear head, computed from its inputs in row chunks
    without the `[N, C]` logits: `forward(input [..., H], weight [C, H], target, bias [C] = None)`.
    The arguments are `TopKCrossEntropyLoss`'s, with the per-class weights named `class_weight`
    (`weight` is the head's matrix, as in `F.linear`); see `linear_topk_cross_entropy`."""

    def __init__(self, p_k: Sequence[float] | Tensor, *, chunk_size: int | None = None,
                 class_weight: Tensor | None = None, **kwargs: Any) -> None:
        super().__init__()
        if "weight" in kwargs:
            raise TypeError("per-class weights are passed as class_weight=; weight is the head's matrix, "
                            "an argument of forward")
        TopKCrossEntropyLoss(p_k, weight=class_weight, **kwargs)  # validates every argument once
        self.p_k, self.kwargs = p_k, kwargs
        self.chunk_size = check_chunk_size(chunk_size)
        self.register_buffer("class_weight", class_weight)

    def forward(self, input: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None = None) -> Tensor:
        return linear_topk_cross_entropy(input, weight, target, self.p_k, bias, chunk_size=self.chunk_size,
                                         class_weight=self.class_weight, **self.kwargs)

    def extra_repr(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return f"p_k={list(self.p_k)}, chunk_size={self.chunk_size}{options}"
