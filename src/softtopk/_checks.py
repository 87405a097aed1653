"""Argument checks shared by the public functions: each raises a ValueError or TypeError
that names the argument and the form it expects."""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Iterator

import torch

_DEVICE_PATH = False  # set by `device_path`


def eager_cpu(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is a CPU tensor outside torch.compile: there the host may read its values (to
    check them, or to pick a path) without waiting for a device or breaking a compiled graph, and
    the CPU's own fast paths apply. Elsewhere the code reads nothing back."""
    return not _DEVICE_PATH and tensor.device.type == "cpu" and not torch.compiler.is_compiling()


@contextlib.contextmanager
def device_path() -> Iterator[None]:
    """Within it `eager_cpu` answers False: CPU tensors take the code path of GPU tensors, which the
    tests and `benchmarks/count_ops.py` check and count on a machine without a GPU."""
    global _DEVICE_PATH
    before, _DEVICE_PATH = _DEVICE_PATH, True
    try:
        yield
    finally:
        _DEVICE_PATH = before


def check_scores(scores: object, name: str = "scores") -> torch.Tensor:
    """A floating-point tensor with at least one dimension and at least one item."""
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {scores.dtype}")
    if scores.dim() < 1:
        raise ValueError(f"{name} must have at least 1 dimension [..., n], got a 0-d tensor")
    if scores.shape[-1] < 1:
        raise ValueError(f"{name} must have at least one item in its last dimension, got shape "
                         f"{tuple(scores.shape)}")
    return scores


def check_int(value: object, name: str, low: int | None = None) -> int:
    """An integer (a Python or NumPy int, not a bool), >= `low` if given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value}")
    return int(value)


def check_real(value: object, name: str, low: float = -math.inf, high: float = math.inf,
               high_open: bool = False) -> float:
    """A real number (int or float, not a bool) in [low, high], or [low, high) with `high_open`;
    NaN is never in range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not (low <= value < high if high_open else low <= value <= high):
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}{')' if high_open else ']'}, got {value}")
    return float(value)


def check_positive_finite(value: object, name: str) -> float:
    """A real number > 0 and finite."""
    value = check_real(value, name)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return value


def check_k(k: object, n: int, name: str = "k") -> int:
    """An integer with 1 <= k <= n."""
    k = check_int(k, name)
    if not 1 <= k <= n:
        raise ValueError(f"{name} must satisfy 1 <= {name} <= n = {n}, got {k}")
    return k


def check_choice(value: object, name: str, choices: tuple[str, ...] | list[str]) -> str:
    """One of a fixed set of strings."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value  # type: ignore[return-value]


def check_index(index: object, batch_shape: torch.Size, n: int, name: str = "index") -> torch.Tensor:
    """An integer tensor of shape `batch_shape` with values in [0, n)."""
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integers, got {type(index).__name__}")
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {index.dtype}")
    if index.shape != batch_shape:
        raise ValueError(f"{name} must have shape {tuple(batch_shape)} (the scores' batch shape), "
                         f"got {tuple(index.shape)}")
    check_none((index < 0) | (index >= n), f"{name} values must lie in [0, {n})",
               lambda: f", got range [{int(index.min())}, {int(index.max())}]")
    return index


def check_none(bad: torch.Tensor, message: str, detail: Callable[[], str] = str) -> None:
    """Raise ValueError(message + detail()) if any of `bad` is True. Where that would wait for the
    device, and under torch.compile, a device-side assertion with `message` instead (as
    `cross_entropy` makes)."""
    if not eager_cpu(bad):
        torch._assert_async(~bad.any(), message)
    elif bool(bad.any()):
        raise ValueError(message + detail())


def check_target_range(safe: torch.Tensor, classes: int, ignore_index: int) -> None:
    """Class indices in [0, classes), where `safe` holds the targets with `ignore_index` replaced."""
    message = f"target values must lie in [0, {classes}) or equal ignore_index = {ignore_index}"
    if not eager_cpu(safe):
        torch._assert_async(((safe >= 0) & (safe < classes)).all(), message)
    elif safe.numel():
        low, high = torch.aminmax(safe)
        if int(low) < 0 or int(high) >= classes:
            raise ValueError(message)
