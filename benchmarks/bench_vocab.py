"""Peak memory and time of one forward + backward step of a classifier head's loss at vocabulary scale:
`F.linear` + `F.cross_entropy`, `F.linear` + `TopKCrossEntropyLoss`, and the fused
`linear_topk_cross_entropy` (top-k, and method='softmax'), which never holds the [N, C] logits.

    python benchmarks/bench_vocab.py [--device cpu] [--threads 1] [--repeats 10] [--steps 2]
                                     [--sizes 2048,256,32768 ...] [--top-m 16] [--p-k .5,0,0,0,.5]

Memory: each case runs in a fresh process. On the CPU its extra peak is the process's peak RSS
(VmHWM, reset through /proc/self/clear_refs; not ru_maxrss, which a child inherits from its parent)
less the RSS once the inputs, the parameters and their (preallocated) gradients exist, after a small
warm-up step; on CUDA, max_memory_allocated less the memory allocated then. The time of that process's
steps after the first is shown next to it; the ratios to the unfused baselines come from calls that
alternate with them in this process, at the first of `--sizes`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _timing import paired_ms

import softtopk

P_K = [0.5, 0, 0, 0, 0.5]
TOPK = dict(method="splitter_selection", inverse_temperature=1.0, m=16, distribution="logistic_phi")
SIZES = [(2048, 256, 32768), (2048, 256, 131072), (2048, 256, 262144), (4096, 512, 131072)]
VARIANTS = ("linear + cross_entropy", "linear + TopKCrossEntropyLoss", "fused top-k", "fused softmax")
LIMIT_BYTES = 12 * 2**30  # cases estimated to need more are skipped
GIB = 2**30


def loss_fn(variant: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, y: torch.Tensor,
            p_k: list[float] = P_K, m: int = TOPK["m"]) -> Callable[[], torch.Tensor]:
    topk = {**TOPK, "m": m}
    if variant == "linear + cross_entropy":
        return lambda: F.cross_entropy(F.linear(x, w, b), y)
    if variant == "linear + TopKCrossEntropyLoss":
        loss = softtopk.TopKCrossEntropyLoss(p_k, **topk)
        return lambda: loss(F.linear(x, w, b), y)
    if variant == "fused top-k":
        return lambda: softtopk.linear_topk_cross_entropy(x, w, y, p_k, b, **topk)
    return lambda: softtopk.linear_topk_cross_entropy(x, w, y, [1.0], b, method="softmax")


def head(n: int, h: int, c: int, device: str) -> tuple[torch.Tensor, ...]:
    """Hidden states, weight and bias (with zero gradients: backward accumulates in place), targets."""
    x, w, b = torch.randn(n, h), torch.randn(c, h) / h**0.5, torch.zeros(c)
    tensors = [t.to(device).requires_grad_() for t in (x, w, b)]
    for t in tensors:
        t.grad = torch.zeros_like(t)
    return (*tensors, torch.randint(0, c, (n,), device=device))


def step(fn: Callable[[], torch.Tensor], device: str) -> float:
    start = time.perf_counter()
    fn().backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def rss(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process, in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def one_case(variant: str, n: int, h: int, c: int, device: str, repeats: int, p_k: list[float],
             m: int) -> dict:
    """Extra peak bytes of the first step and the median seconds of `repeats` more, in this fresh process."""
    step(loss_fn(variant, *head(64, 16, 1000, device), p_k, m), device)  # loads kernels and thread pools
    fn = loss_fn(variant, *head(n, h, c, device), p_k, m)
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = rss("VmRSS")
        reset_peak_rss()
    seconds = [step(fn, device)]
    extra = torch.cuda.max_memory_allocated() - base if device == "cuda" else rss("VmHWM") - base
    seconds += [step(fn, device) for _ in range(repeats)]
    return {"extra_bytes": extra, "seconds": statistics.median(seconds[1:] or seconds)}


def estimated_bytes(variant: str, n: int, h: int, c: int) -> int:
    """A generous estimate: unfused, the logits, their gradient and one more of that size."""
    return 4 * (n * h + 2 * c * h + (3 * n * c if variant.startswith("linear") else 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10,
                        help="alternating calls for the time ratios (0: only the table)")
    parser.add_argument("--case", nargs=4, metavar=("VARIANT", "N", "H", "C"), help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per case after the first "
                        "(0: the first step's time); above C = 32768, one")
    parser.add_argument("--sizes", nargs="+", default=[",".join(map(str, size)) for size in SIZES],
                        help="N,H,C of the table's rows")
    parser.add_argument("--top-m", type=int, default=TOPK["m"], help="the top-k loss's preselection m")
    parser.add_argument("--p-k", default=",".join(f"{p:g}" for p in P_K), help="the top-k loss's P_K")
    args = parser.parse_args()
    p_k = [float(p) for p in args.p_k.split(",")]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.case:
        variant, *shape = args.case
        print(json.dumps(one_case(variant, *map(int, shape), args.device, args.steps, p_k, args.top_m)))
        return

    print(f"device {args.device}, {args.threads} thread(s); P_K = {p_k}, {TOPK | {'m': args.top_m}}\n")
    n, h, c = map(int, args.sizes[0].split(","))
    x, w, b, y = head(n, h, c, args.device)
    ratios = {}
    for fused, unfused in (("fused top-k", "linear + TopKCrossEntropyLoss"),
                           ("fused softmax", "linear + cross_entropy"))[: 2 if args.repeats else 0]:
        fn, base = (loss_fn(v, x, w, b, y, p_k, args.top_m) for v in (fused, unfused))
        ratios[fused] = paired_ms(lambda fn=fn: step(fn, args.device),
                                  lambda base=base: step(base, args.device), repeats=args.repeats, warmup=2)
        print(f"{fused} / {unfused} at N, H, C = {n}, {h}, {c}: {ratios[fused][1]:.2f}x "
              f"({ratios[fused][0]:.0f} ms)")
    del x, w, b, y

    print("\n| N | H | C | logits (float32) | " + " | ".join(VARIANTS) + " |")
    print("|---|---|---|---|" + "---|" * len(VARIANTS))
    for n, h, c in (map(int, size.split(",")) for size in args.sizes):
        cells = []
        for variant in VARIANTS:
            if estimated_bytes(variant, n, h, c) > LIMIT_BYTES:
                cells.append("skipped (> 12 GiB)")
                continue
            steps = args.steps if c <= 32768 else min(args.steps, 1)
            command = [sys.executable, __file__, "--device", args.device, "--threads", str(args.threads),
                       "--case", variant, str(n), str(h), str(c), "--steps", str(steps),
                       "--top-m", str(args.top_m), "--p-k", args.p_k]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            cells.append(f"{result['extra_bytes'] / GIB:.3f} GiB, {result['seconds']:.2f} s")
        print(f"| {n} | {h} | {c} | {4 * n * c / GIB:.2f} GiB | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
