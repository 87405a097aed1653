"""Forward + backward time of the top-k losses at the paper's three settings, as a ratio to
`F.cross_entropy` on the same batch (the medians of calls alternating with it) and to the original `difftopk`
(when it is importable), with the aten ops and the peak memory one call dispatches.

    python benchmarks/bench_losses.py [--threads 2] [--device cpu] [--exact] [--compile]

Methods that need no preselection are also timed on all classes (m = -).
"""

from __future__ import annotations

import argparse
import contextlib
import io

import torch
import torch.nn.functional as F
from _dispatch import dispatch_stats
from _timing import paired_ms

import softtopk
from softtopk.relax import RELAXATIONS

SETTINGS = [  # name, batch, classes, m, p_k
    ("ImageNet-1K", 500, 1000, 16, [0.2] * 5),
    ("CIFAR-100", 128, 100, None, [0.2] * 5),
    ("ImageNet-21K-P", 500, 10450, 50, [0.5, 0, 0, 0, 0.5]),
]
METHODS = [*softtopk.METHODS, "smooth_topk"]
ORIGINAL = ("bitonic", "splitter_selection", "odd_even", "neuralsort", "softsort", "smooth_topk")


def ours(method: str, m: int | None, p_k: list[float], eps: float) -> torch.nn.Module:
    if method == "smooth_topk":
        return softtopk.SmoothTopKLoss(k=5)
    return softtopk.TopKCrossEntropyLoss(p_k, method=method, m=m, distribution="logistic_phi", eps=eps)


def original(method: str, classes: int, m: int | None, p_k: list[float], device: str):
    if method not in ORIGINAL:
        return None
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import difftopk

            if method == "smooth_topk":
                return difftopk.SmoothTopKLoss(classes, k=5).to(device)
            return difftopk.TopKCrossEntropyLoss(
                method, 1.0, p_k, classes, m=m, distribution="logistic_phi", device=device
            )
    except (ImportError, NotImplementedError, AssertionError, ValueError, KeyError):
        return None


def runs(classes: int, m: int | None) -> list[tuple[str, int | None]]:
    """(method, m) pairs of a setting: every method at the setting's m; with preselection, those
    that need none also on all classes."""
    pairs = [(method, m) for method in METHODS]
    if m is not None:
        for name, r in RELAXATIONS.items():
            if not r.needs_m:
                pairs.append((name, None))
    return pairs


def step(loss_fn, logits: torch.Tensor, target: torch.Tensor):
    def call():
        logits.grad = None
        loss_fn(logits, target).backward()

    return call


def bench_setting(name: str, batch: int, classes: int, m: int | None, p_k: list[float],
                  args: argparse.Namespace, columns: int) -> None:
    logits = torch.randn(batch, classes, device=args.device, requires_grad=True)
    target = torch.randint(0, classes, (batch,), device=args.device)
    repeats = 15 if classes > 5000 else 30
    base = step(F.cross_entropy, logits, target)
    ops, peak = dispatch_stats(base)
    base_ms = paired_ms(base, base, repeats)[0]
    print(f"| {name} | cross-entropy | | {base_ms:.3f} | 1.0 | {ops} | {peak / 2**20:.1f} | | |"
          + " |" * columns, flush=True)
    for method, mm in runs(classes, m):
        fn = step(ours(method, mm, p_k, 1e-7), logits, target)
        ms, ratio = paired_ms(fn, base, repeats)
        ops, peak = dispatch_stats(fn)
        ref = original(method, classes, mm, p_k, args.device) if mm == m else None
        ref_ms = paired_ms(step(ref, logits, target), base, repeats)[0] if ref is not None else None
        cells = [f"{ref_ms:.3f}", f"{ref_ms / ms:.1f}×"] if ref_ms else ["–", "–"]
        if args.exact:
            if method == "smooth_topk":
                cells += ["", ""]
            else:
                exact = step(ours(method, mm, p_k, 0.0), logits, target)
                exact_ms, exact_ratio = paired_ms(exact, base, repeats)
                cells += [f"{exact_ms:.3f}", f"{exact_ratio:.1f}"]
        if args.compile:
            compiled = torch.compile(ours(method, mm, p_k, 1e-7))
            cells.append(f"{paired_ms(step(compiled, logits, target), base, repeats)[0]:.3f}")
        label = "all" if mm is None else str(mm)
        print(f"| {name} | {method} | {label} | {ms:.3f} | {ratio:.1f} | {ops} | {peak / 2**20:.1f} | "
              + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--exact", action="store_true", help="also time the exact loss, eps=0")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd losses")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    extra = (" eps=0 ms | eps=0 × CE |" if args.exact else "") + (" compiled ms |" if args.compile else "")
    print(f"torch {torch.__version__}, {args.device}, {args.threads} threads; median ms of forward+backward")
    print("| setting | method | m | ms | × CE | aten ops | peak MB | original ms | faster than the original |"
          + extra)
    print("|---|---|---|---|---|---|---|---|---|" + "---|" * extra.count("|"))
    for setting in SETTINGS:
        bench_setting(*setting, args, extra.count("|"))


if __name__ == "__main__":
    main()
