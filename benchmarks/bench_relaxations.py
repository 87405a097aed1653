"""Forward + backward time of `rank_probabilities`: the one-item fast path and the full `[B, n, k]`
matrix, for every method, next to `F.cross_entropy` on a batch of the same shape.

    python benchmarks/bench_relaxations.py [--threads 2]
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
import torch.nn.functional as F
from _timing import median_ms

from softtopk import METHODS, rank_probabilities

SETTINGS = [(500, 16, 5), (128, 100, 5)]  # batch, n, k


def step_ms(fn, scores: torch.Tensor) -> float:
    def step():
        scores.grad = None
        fn(scores).sum().backward()

    return median_ms(step)


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
        base = step_ms(partial(F.cross_entropy, target=target), scores)
        print(f"| {batch} | {n} | {k} | cross-entropy | {base:.3f} | 1.0 | | |")
        for method in METHODS:
            fast = step_ms(partial(rank_probabilities, k=k, method=method, index=index), scores)
            full = step_ms(partial(rank_probabilities, k=k, method=method), scores)
            print(f"| {batch} | {n} | {k} | {method} | {fast:.3f} | {fast / base:.1f} | {full:.3f} | "
                  f"{full / base:.1f} |", flush=True)


if __name__ == "__main__":
    main()
