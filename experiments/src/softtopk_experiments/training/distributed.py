"""Multi-process data parallelism through torch.distributed, as started by `torchrun`.

Every process draws the same global batch from the same generator; process r trains on the r-th
of `world` near-equal slices, so the data a run sees does not depend on the number of processes.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    """This process's place among the data-parallel processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and shows progress."""
        return self.rank == 0

    def shard(self, items: torch.Tensor) -> torch.Tensor:
        """This process's slice of `items [B, ...]` (contiguous, sizes differ by at most one)."""
        return torch.tensor_split(items, self.world)[self.rank] if self.world > 1 else items

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of `values` over the processes (the same tensor on every process)."""
        if self.world > 1:
            values = values.clone()
            dist.all_reduce(values)
        return values

    def all_agree(self, ok: bool) -> bool:
        """Whether `ok` holds on every process (True without torchrun): lets all processes stop
        together when one of them, e.g. the main one checking the run folder, fails."""
        if self.world == 1:
            return ok
        flag = torch.tensor([1.0 if ok else 0.0], device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())


def join(device: str) -> Group:
    """Join the process group that `torchrun` describes in the environment (`WORLD_SIZE` > 1), with
    nccl on CUDA and gloo on the CPU; a single process needs no group. The group lives until the
    process exits, so that several commands in one process share it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        atexit.register(dist.destroy_process_group)
    return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
