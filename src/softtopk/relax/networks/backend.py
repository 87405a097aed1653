"""Which backend runs a sorting network: chosen once per call, at the entry point, from the scores'
device and dtype and the one override, the environment variable `SOFTTOPK_BACKEND` (read here alone).

A backend is a module with `linear_network(state, key, dist, beta, lam, masked)` and
`item_ranks(scores, index, key, dist, beta, lam, log)`: `torch_path` (every device and dtype,
`torch.compile`) or `triton_launch` (float32 on CUDA; CPU tensors under Triton's interpreter).
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

import torch

from ..._checks import check_choice
from . import torch_path

Tensor = torch.Tensor

VARIABLE = "SOFTTOPK_BACKEND"
CHOICES = ("auto", "torch", "triton")
AUTO = {"cuda": "triton"}
"""What `auto` picks by device type (others: the torch path); Triton only once `VERIFIED_ON_GPU`."""

VERIFIED_ON_GPU = False
"""Whether the kernel has been checked against the torch path on a real GPU; until it has, `auto`
keeps CUDA tensors on the torch path (so far it has only run under Triton's interpreter)."""


def choose(scores: Tensor) -> ModuleType:
    """The backend for `scores` under `SOFTTOPK_BACKEND`: 'torch' the torch path; 'auto' (default)
    `AUTO`'s pick for the device where it can run, else the torch path; 'triton' the kernel, an error
    where it cannot run. Compiled graphs and other dtypes than float32 always take the torch path."""
    choice = check_choice(os.environ.get(VARIABLE, "auto"), VARIABLE, CHOICES)
    if choice == "torch" or torch.compiler.is_compiling():
        return torch_path
    if choice == "auto" and AUTO.get(scores.device.type) != "triton":
        return torch_path
    launch = _triton_launch()
    if launch is None:
        if choice == "triton":
            raise ImportError("SOFTTOPK_BACKEND=triton needs the triton package (pip install triton)")
        return torch_path
    if scores.dtype != torch.float32:
        return torch_path
    if choice == "auto":
        return launch if VERIFIED_ON_GPU else torch_path
    device = scores.device.type
    if device == "cpu" and not launch.kernels.INTERPRETED:
        raise RuntimeError("SOFTTOPK_BACKEND=triton on a CPU tensor needs Triton's interpreter: set "
                           "TRITON_INTERPRET=1 before the first call (or SOFTTOPK_BACKEND=torch)")
    if device not in ("cuda", "cpu"):
        raise RuntimeError(f"SOFTTOPK_BACKEND=triton runs on CUDA tensors (and on CPU tensors under "
                           f"Triton's interpreter), got a tensor on {device!r}")
    return launch


@functools.cache
def _triton_launch() -> ModuleType | None:
    """The module `triton_launch`, or None where triton does not import (tried once)."""
    try:
        return importlib.import_module(".triton_launch", __package__)
    except ImportError:
        return None
