"""Forward + backward time of `rank_probabilities`: the one-item fast path and the full `[B, n, k]`
matrix, for every method, next to `F.cross_entropy` on a batch of the same shape.

    python benchmarks/bench_relaxations.py [--threads 2]
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
import torch.nn.functional as F
from _timing import paired_ms

from softtopk import METHODS, rank_probabilities
from softtopk.relax import RELAXATIONS

SETTINGS = [(500, 16, 5), (128, 100, 5), (500, 1000, 5)]  # batch, n, k
LARGE = 200  # beyond this n only the methods that need no preselection run


def step(fn, scores: torch.Tensor):
    def call():
        scores.grad = None
        fn(scores).sum().backward()

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads; median ms of forward+backward")
    print("| B | n | k | method | fast path ms | × CE | full matrix ms | × CE |")
    print("|---|---|---|---|---|---|---|---|")
    for batch, n, k in SETTINGS:
        scores = torch.randn(batch, n, requires_grad=True)
        index = torch.randint(0, n, (batch,))
        target = torch.randint(0, n, (batch,))
        base = step(partial(F.cross_entropy, target=target), scores)
        print(f"| {batch} | {n} | {k} | cross-entropy | {paired_ms(base, base)[0]:.3f} | 1.0 | | |")
        for method in METHODS:
            if n > LARGE and RELAXATIONS[method].needs_m:
                continue
            fast, fast_ratio = paired_ms(step(partial(rank_probabilities, k=k, method=method, index=index),
                                              scores), base)
            full, full_ratio = paired_ms(step(partial(rank_probabilities, k=k, method=method), scores), base)
            print(f"| {batch} | {n} | {k} | {method} | {fast:.3f} | {fast_ratio:.1f} | {full:.3f} | "
                  f"{full_ratio:.1f} |", flush=True)


if __name__ == "__main__":
    main()
