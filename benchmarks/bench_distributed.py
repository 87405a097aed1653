"""The class-sharded loss on CPU gloo groups: time of one forward+backward and bytes each rank sends
per call, at 1, 2 and 4 processes, next to the single-process loss on the whole logits.

    python benchmarks/bench_distributed.py [--repeats 5] [--sizes 1024x32768,4096x131072]

Every process uses one thread; with more processes than cores the ranks share cores, and the time
shows that, not the loss. The loss: P_K = [.5, 0, 0, 0, .5], splitter selection, m = 16,
logistic_phi, label smoothing 0.1 (which adds the log-sum-exp over all classes).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from softtopk import topk_cross_entropy
from softtopk.distributed import count_bytes, vocab_parallel_topk_cross_entropy

SETTINGS = dict(p_k=[0.5, 0, 0, 0, 0.5], method="splitter_selection", m=16, distribution="logistic_phi",
                label_smoothing=0.1)


def _median_ms(step, repeats: int) -> float:
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _data(rows: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(rows, classes, generator=g), torch.randint(0, classes, (rows,), generator=g)


def _rank(rank: int, world: int, port: int, rows: int, classes: int, repeats: int, results) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    logits, target = _data(rows, classes)
    block = torch.tensor_split(logits, world, dim=1)[rank].clone().requires_grad_()
    del logits

    def step() -> None:
        block.grad = None
        vocab_parallel_topk_cross_entropy(block, target, **SETTINGS).backward()

    with count_bytes() as sent:
        step()
    dist.barrier()
    ms = _median_ms(step, repeats)
    results.put((rank, ms, sent[0]))
    dist.barrier()
    dist.destroy_process_group()


def sharded(world: int, rows: int, classes: int, repeats: int) -> tuple[float, int]:
    """(the slowest rank's median ms, the bytes rank 0 sends per call)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.start_processes(_rank, args=(world, port, rows, classes, repeats, results), nprocs=world,
                       start_method="spawn")
    outcomes = sorted(results.get() for _ in range(world))
    return max(ms for _, ms, _ in outcomes), outcomes[0][2]


def single(rows: int, classes: int, repeats: int) -> float:
    torch.set_num_threads(1)
    logits, target = _data(rows, classes)
    logits.requires_grad_()

    def step() -> None:
        logits.grad = None
        topk_cross_entropy(logits, target, **SETTINGS).backward()

    return _median_ms(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="1024x32768,4096x32768,4096x131072")
    parser.add_argument("--worlds", default="1,2,4")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print("| N | C | processes | ms per call | × one process | bytes sent per rank and call |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        rows, classes = map(int, size.split("x"))
        base = single(rows, classes, args.repeats)
        print(f"| {rows} | {classes} | one process, no group | {base:.1f} | 1 | 0 |", flush=True)
        for world in map(int, args.worlds.split(",")):
            ms, sent = sharded(world, rows, classes, args.repeats)
            print(f"| {rows} | {classes} | {world} | {ms:.1f} | {ms / base:.2f} | {sent:,} |", flush=True)


if __name__ == "__main__":
    main()
