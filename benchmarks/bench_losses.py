"""Forward + backward time of the top-k losses at the paper's three settings, as a ratio to
`F.cross_entropy` on the same batch and to the original `difftopk` (when it is importable).

    python benchmarks/bench_losses.py [--threads 2] [--device cpu] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import io

import torch
import torch.nn.functional as F
from _timing import median_ms

import softtopk

SETTINGS = [  # name, batch, classes, m, p_k
    ("ImageNet-1K", 500, 1000, 16, [0.2] * 5),
    ("CIFAR-100", 128, 100, None, [0.2] * 5),
    ("ImageNet-21K-P", 500, 10450, 50, [0.5, 0, 0, 0, 0.5]),
]
METHODS = ["bitonic", "splitter_selection", "odd_even", "neuralsort", "softsort", "sinkhorn", "smooth_topk"]


def ours(method: str, classes: int, m: int | None, p_k: list[float]) -> torch.nn.Module:
    if method == "smooth_topk":
        return softtopk.SmoothTopKLoss(k=5)
    return softtopk.TopKCrossEntropyLoss(p_k, method=method, m=m, distribution="logistic_phi")


def original(method: str, classes: int, m: int | None, p_k: list[float], device: str):
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import difftopk

            if method == "smooth_topk":
                return difftopk.SmoothTopKLoss(classes, k=5).to(device)
            if method == "sinkhorn":
                return None
            return difftopk.TopKCrossEntropyLoss(
                method, 1.0, p_k, classes, m=m, distribution="logistic_phi", device=device
            )
    except (ImportError, NotImplementedError, AssertionError):
        return None


def step_ms(loss_fn, logits: torch.Tensor, target: torch.Tensor) -> float:
    def step():
        logits.grad = None
        loss_fn(logits, target).backward()

    return median_ms(step, repeats=15 if logits.shape[1] > 5000 else 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd losses")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.device}, {args.threads} threads; median ms of forward+backward")
    print(f"| setting | method | ms | × cross-entropy | original ms | speed-up vs original |"
          f"{' compiled ms |' if args.compile else ''}")
    print(f"|---|---|---|---|---|---|{'---|' if args.compile else ''}")
    for name, batch, classes, m, p_k in SETTINGS:
        logits = torch.randn(batch, classes, device=args.device, requires_grad=True)
        target = torch.randint(0, classes, (batch,), device=args.device)
        base = step_ms(F.cross_entropy, logits, target)
        print(f"| {name} | cross-entropy | {base:.3f} | 1.0 | | |{' |' if args.compile else ''}")
        for method in METHODS:
            if method == "odd_even" and classes > 200 and m is None:
                continue
            ms = step_ms(ours(method, classes, m, p_k), logits, target)
            ref = original(method, classes, m, p_k, args.device)
            ref_ms = step_ms(ref, logits, target) if ref is not None else None
            ref_cols = f"{ref_ms:.3f} | {ref_ms / ms:.1f}×" if ref_ms else "– | –"
            compiled = ""
            if args.compile:
                compiled = f" {step_ms(torch.compile(ours(method, classes, m, p_k)), logits, target):.3f} |"
            print(f"| {name} | {method} | {ms:.3f} | {ms / base:.1f} | {ref_cols} |{compiled}", flush=True)


if __name__ == "__main__":
    main()
