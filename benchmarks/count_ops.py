"""The aten ops one forward+backward of the sorting-network losses dispatches on the torch and the
Triton backends, at the paper's three settings: the README's GPU table, countable on a CPU.

    python benchmarks/count_ops.py

Triton runs under its interpreter (`TRITON_INTERPRET=1`, set here); a kernel launch counts as one op,
the interpreter's own copies of the launch's arguments left out. Views are excluded, as in
`bench_losses.py`. Each setting is counted twice: as the CPU runs it, and on the CUDA path, which the
code takes wherever `_checks.eager_cpu` says no (forced here by `_checks.device_path`): there the
CPU's range check of the targets, its padded topk, its check for masked (-inf) logits and its square
roots for t^-1/4 are left out (CUDA leaves the range to the indexing ops' assertions and always
takes the masked path).
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported

import contextlib  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _dispatch import Watch  # noqa: E402
from bench_losses import SETTINGS  # noqa: E402

import softtopk  # noqa: E402
from softtopk import _checks  # noqa: E402
from softtopk.relax.networks import triton_kernels  # noqa: E402

_active: list[Watch] = []


class _CountedKernel:
    """A Triton kernel whose launch counts as one op of the active `Watch`."""

    def __init__(self, kernel) -> None:
        self.kernel = kernel

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def counted(*args, **kwargs):
            if not _active:
                return launch(*args, **kwargs)
            watch = _active[-1]
            watch.ops, watch.paused = watch.ops + 1, True
            try:
                return launch(*args, **kwargs)
            finally:
                watch.paused = False

        return counted


def count_ops(loss_fn: Callable, logits: torch.Tensor, target: torch.Tensor) -> int:
    """Aten ops of one forward+backward of `loss_fn(logits, target)`, after a first, uncounted one
    (which builds the caches)."""
    loss_fn(logits, target).backward()
    with Watch() as watch:
        _active.append(watch)
        try:
            loss_fn(logits, target).backward()
        finally:
            _active.pop()
    return watch.ops


def main() -> None:
    triton_kernels.forward_kernel = _CountedKernel(triton_kernels.forward_kernel)
    triton_kernels.backward_kernel = _CountedKernel(triton_kernels.backward_kernel)
    torch.manual_seed(0)
    print("| setting | path | cross-entropy | bitonic, torch | bitonic, Triton | splitter, torch | "
          "splitter, Triton |")
    print("|---|---|---|---|---|---|---|")
    for setting, batch, classes, m, p_k in SETTINGS:
        logits = torch.randn(batch, classes, requires_grad=True)
        target = torch.randint(0, classes, (batch,))
        where = f"m {m}" if m else "all classes"
        for path, context in (("CPU", contextlib.nullcontext), ("CUDA", _checks.device_path)):
            with context():
                row = [count_ops(F.cross_entropy, logits, target)]
                for method in ("bitonic", "splitter_selection"):
                    loss_fn = softtopk.TopKCrossEntropyLoss(p_k, method, m=m, distribution="logistic_phi")
                    for choice in ("torch", "triton"):
                        os.environ["SOFTTOPK_BACKEND"] = choice
                        row.append(count_ops(loss_fn, logits, target))
            print(f"| {setting} (B {batch}, C {classes}, {where}) | {path} | " + " | ".join(map(str, row))
                  + " |", flush=True)


if __name__ == "__main__":
    main()
