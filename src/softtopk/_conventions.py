"""The conventions of `torch.nn.CrossEntropyLoss` that every loss here follows: the shapes of input
and target, per-class weights, `ignore_index` and the reductions."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._checks import check_choice, check_int, check_scores

Tensor = torch.Tensor
REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: object) -> str:
    return check_choice(reduction, "reduction", REDUCTIONS)


def check_ignore_index(ignore_index: object) -> int:
    return check_int(ignore_index, "ignore_index")


def check_weight(weight: Tensor | None, classes: int | None = None) -> None:
    """None, or a 1-D floating-point tensor of per-class weights (`classes` entries, if given)."""
    if weight is None:
        return
    if not isinstance(weight, Tensor) or not weight.is_floating_point() or weight.dim() != 1:
        raise TypeError("weight must be a 1-D floating-point tensor of per-class weights")
    if classes is not None and weight.shape[0] != classes:
        raise ValueError(f"weight must have one entry per class, C = {classes}, got {weight.shape[0]}")


def flatten(input: Tensor, target: Tensor, dense: bool = True) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """Class dimension last, one row per prediction: `[M, C]` logits, the target as `[M]` class
    indices or (with `dense`) `[M, C]` probabilities or booleans, and the shape of per-prediction
    results. Input `[C]`, `[N, C]` or `[N, C, d1, ...]`; class-index targets have the input's shape
    without the class dimension, dense targets the input's shape."""
    check_scores(input, "input")
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    is_dense = target.is_floating_point() or target.dtype == torch.bool
    if target.is_complex() or (is_dense and not dense):
        kinds = "class indices, probabilities or booleans" if dense else "integer class indices"
        raise TypeError(f"target must hold {kinds}, got dtype {target.dtype}")
    class_dim = 0 if input.dim() == 1 else 1
    per_prediction = tuple(s for d, s in enumerate(input.shape) if d != class_dim)
    expected = tuple(input.shape) if is_dense else per_prediction
    if tuple(target.shape) != expected:
        kind = "probabilities or booleans" if is_dense else "class indices"
        raise ValueError(f"target of {kind} must have shape {expected} for input of shape "
                         f"{tuple(input.shape)} (classes in dimension {class_dim}), "
                         f"got {tuple(target.shape)}")
    classes = input.shape[class_dim]
    if input.dim() > 2:
        input = input.movedim(1, -1)
        target = target.movedim(1, -1) if is_dense else target
    flat = target.reshape(-1, classes) if is_dense else target.reshape(-1)
    return input.reshape(-1, classes), flat, per_prediction


def reduce(rows: Tensor, reduction: str, shape: tuple[int, ...], count: Callable[[], Tensor]) -> Tensor:
    """Per-row losses `[M]` -> the reduction; 'mean' divides by `count()`. With nothing counted
    'mean' is 0/0 = NaN, as in cross-entropy; its gradient is zero, not NaN, as long as the rows of
    uncounted predictions are selected away (`where`, `masked_fill`), not multiplied by 0."""
    if reduction == "none":
        return rows.reshape(shape)
    total = rows.sum()
    return total if reduction == "sum" else total / count()
