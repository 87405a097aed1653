"""Speed of the operators against the peers that install here, as ratios measured in one run.

- soft ranks and soft sorted values on torchsort's benchmark shapes (batch 1-256 at n = 100, n up to
  5,000 at batch 1), next to torchsort's `soft_rank` / `soft_sort` (l2, regularization strength 1;
  where torchsort is not installed, `torch.sort` is the baseline instead) and diffsort's
  `DiffSortNet` (bitonic, which returns the sorted values and the full n x n matrix; only at n = 100:
  it builds each layer from dense matrices, O(n^2) per layer and item, so only up to batch 16);
- `soft_topk_mask` at batch 128, k = 8, n = 1,000 ... 100,000, next to `torch.topk`.

Forward and forward+backward (of a weighted sum), median ms, and the ratio to the baseline timed
alternately with it (`_timing.paired_ms`).

    python benchmarks/bench_operators.py [--threads 2] [--repeats 10] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from functools import partial

import torch
from _timing import paired_ms

from softtopk import METHODS, soft_rank, soft_sort, soft_topk_mask

Op = Callable[[torch.Tensor], torch.Tensor]

RANK_SHAPES = [(1, 100), (16, 100), (256, 100), (1, 1000), (1, 5000)]  # batch, n
MASK_SIZES = [1_000, 10_000, 100_000]
MASK_BATCH, MASK_K = 128, 8
#: The largest batch x n^2 (a proxy of the work) at which each implementation runs here; see the
#: README's operator table for the costs in n.
RANK_LIMIT = {"lapsum": 3e7, "neuralsort": 3e7, "softsort": 3e7, "bitonic": 1e6, "odd_even": 2e5,
              "sinkhorn": 2e5, "diffsort bitonic": 2e5}
SORT_LIMIT = {**RANK_LIMIT, "lapsum": 3e6, "bitonic": 3e7, "odd_even": 1e6}
MASK_LIMIT = {"lapsum": 100_000, "softsort": 100_000, "neuralsort": 10_000, "ot_topk": 10_000}


def _forward(op: Op, x: torch.Tensor) -> Callable[[], object]:
    def call():
        with torch.no_grad():
            return op(x)

    return call


def _step(op: Op, x: torch.Tensor, weights: torch.Tensor) -> Callable[[], object]:
    def call():
        x.grad = None
        (op(x) * weights).sum().backward()

    return call


def _row(cells: list[object]) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def _compare(label: list[object], op: Op, base: Op, x: torch.Tensor, weights: torch.Tensor,
             repeats: int) -> None:
    """One table row: forward and forward+backward of `op` next to `base`."""
    fwd_ms, fwd_ratio = paired_ms(_forward(op, x), _forward(base, x), repeats=repeats, warmup=2)
    step_ms, step_ratio = paired_ms(_step(op, x, weights), _step(base, x, weights), repeats=repeats, warmup=2)
    _row([*label, f"{fwd_ms:.3f}", f"{fwd_ratio:.2f}", f"{step_ms:.3f}", f"{step_ratio:.2f}"])


def _peers(batch: int, n: int) -> dict[str, tuple[Op, Op]]:
    """name -> (ranks, sorted values) of each peer that installs here (and runs at this size)."""
    peers: dict[str, tuple[Op, Op]] = {}
    if importlib.util.find_spec("torchsort") is not None:
        import torchsort

        peers["torchsort"] = (lambda x: torchsort.soft_rank(x, regularization_strength=1.0),
                              lambda x: torchsort.soft_sort(x, regularization_strength=1.0))
    if importlib.util.find_spec("diffsort") is not None and batch * n * n <= RANK_LIMIT["diffsort bitonic"]:
        from diffsort import DiffSortNet

        net = DiffSortNet("bitonic", n, steepness=10.0, distribution="cauchy")
        position = torch.arange(n, dtype=torch.float32)

        def diffsort_rank(x: torch.Tensor) -> torch.Tensor:
            # P[b, i, r]: item i at ascending position r; rank 0 = the largest
            return (n - 1) - net(x)[1] @ position

        peers["diffsort bitonic"] = (diffsort_rank, lambda x: net(x)[0].flip(-1))
    return peers


def bench_ranks_and_sort(repeats: int, shapes: list[tuple[int, int]]) -> None:
    print("\nSoft ranks and sorted values (torchsort's shapes); × = time over the baseline's")
    _row(["op", "B", "n", "implementation", "fwd ms", "fwd ×", "fwd+bwd ms", "fwd+bwd ×"])
    _row(["---"] * 8)
    for batch, n in shapes:
        x = torch.randn(batch, n, requires_grad=True)
        weights = torch.randn(batch, n)
        peers = _peers(batch, n)
        for op_index, (op_name, limits) in enumerate((("rank", RANK_LIMIT), ("sort", SORT_LIMIT))):
            if "torchsort" in peers:
                base_name, base = "torchsort", peers["torchsort"][op_index]
            else:
                base_name, base = "torch.sort", (lambda t: t.sort(-1, descending=True).values)
            ours: dict[str, Op] = {
                method: ((lambda t, m=method: soft_rank(t, method=m)) if op_name == "rank"
                         else (lambda t, m=method: soft_sort(t, m)))
                for method in METHODS if method in limits}
            others = {name: ops[op_index] for name, ops in peers.items() if name != base_name}
            for name, op in {base_name: base, **others, **ours}.items():
                if name == base_name or batch * n * n <= limits.get(name, 0):
                    _compare([op_name, batch, n, name], op, base, x, weights, repeats)


def bench_mask(repeats: int, sizes: list[int]) -> None:
    print(f"\nsoft_topk_mask, batch {MASK_BATCH}, k = {MASK_K}; × = time over torch.topk's")
    _row(["n", "implementation", "fwd ms", "fwd ×", "fwd+bwd ms", "fwd+bwd ×"])
    _row(["---"] * 6)
    for n in sizes:
        x = torch.randn(MASK_BATCH, n, requires_grad=True)
        weights = torch.randn(MASK_BATCH, n)
        topk_weights = weights[:, :MASK_K].contiguous()

        def hard(t: torch.Tensor) -> torch.Tensor:
            return t.topk(MASK_K, dim=-1).values

        fwd_ms = paired_ms(_forward(hard, x), _forward(hard, x), repeats=repeats, warmup=2)[0]
        step_ms = paired_ms(_step(hard, x, topk_weights), _step(hard, x, topk_weights), repeats=repeats,
                            warmup=2)[0]
        _row([n, "torch.topk", f"{fwd_ms:.3f}", "1.00", f"{step_ms:.3f}", "1.00"])
        for method, limit in MASK_LIMIT.items():
            if n > limit:
                continue
            soft = partial(soft_topk_mask, k=MASK_K, method=method)
            fwd_ms, fwd_ratio = paired_ms(_forward(soft, x), _forward(hard, x), repeats=repeats, warmup=2)
            step_ms, step_ratio = paired_ms(_step(soft, x, weights), _step(hard, x, topk_weights),
                                            repeats=repeats, warmup=2)
            _row([n, method, f"{fwd_ms:.3f}", f"{fwd_ratio:.1f}", f"{step_ms:.3f}", f"{step_ratio:.1f}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="few repeats, the smallest shapes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = 3 if args.quick else args.repeats
    print(f"torch {torch.__version__}, {args.threads} threads; median ms")
    bench_ranks_and_sort(repeats, RANK_SHAPES[:2] if args.quick else RANK_SHAPES)
    bench_mask(repeats, MASK_SIZES[:1] if args.quick else MASK_SIZES)


if __name__ == "__main__":
    main()
