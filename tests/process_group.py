"""Run a function on every rank of a gloo process group of real CPU processes, from inside pytest.

`run_group(world, fn, *args)` spawns `world` processes that join a group on a free port of the
loopback, runs `fn(rank, world, *args)` in each and returns their results in rank order. An exception
on any rank fails the call with that rank's traceback; a group that has not finished within
`timeout` seconds is killed and fails the call, so a hang never blocks the test run.
"""

from __future__ import annotations

import queue
import socket
import traceback
from collections.abc import Callable
from datetime import timedelta

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn: Callable, args: tuple, results, timeout: float) -> None:
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout))
        outcome = ("ok", fn(rank, world, *args))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        outcome = ("error", traceback.format_exc())
    results.put((rank, *outcome))
    if dist.is_initialized() and outcome[0] == "ok":
        dist.barrier()
        dist.destroy_process_group()


def run_group(world: int, fn: Callable, *args: object, timeout: float = 120) -> list:
    """`[fn(0, world, *args), ..., fn(world - 1, world, *args)]`, each on its own process."""
    context = mp.get_context("spawn")
    results = context.Queue()
    port = free_port()
    processes = [context.Process(target=_entry, args=(rank, world, port, fn, args, results, timeout),
                                 daemon=True) for rank in range(world)]
    for process in processes:
        process.start()
    outcomes: dict[int, tuple[str, object]] = {}
    try:
        while len(outcomes) < world:
            try:
                rank, status, value = results.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"the group of {world} processes did not finish within {timeout} s; "
                                   f"finished: {sorted(outcomes)}") from None
            if status == "error":
                raise AssertionError(f"rank {rank} of {world} failed:\n{value}")
            outcomes[rank] = (status, value)
        for process in processes:
            process.join(timeout)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
    return [outcomes[rank][1] for rank in range(world)]
