"""Multi-process training through torch.distributed, as started by `torchrun`.

Every process draws the same global batch from the same generator. Data parallel: process r trains on
the r-th of `world` near-equal slices, so the data a run sees does not depend on the number of
processes. Class-sharded (`--head sharded`): process r holds the r-th contiguous block of the head's
classes (`Group.block`) and trains on the whole batch.
"""

from __future__ import annotations

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

    def block(self, total: int) -> slice:
        """This process's contiguous block of `total` items, as `shard` slices them (in rank order)."""
        sizes = self.block_sizes(total)
        start = sum(sizes[: self.rank])
        return slice(start, start + sizes[self.rank])

    def block_sizes(self, total: int) -> list[int]:
        """The sizes of every process's block of `total` items, in rank order (`torch.tensor_split`'s)."""
        size, extra = divmod(total, self.world)
        return [size + (rank < extra) for rank in range(self.world)]

    def gather_blocks(self, local: torch.Tensor, total: int) -> torch.Tensor:
        """`[N, C_r] -> [N, C]`: every process's block of the `total` columns (`block`), on every process."""
        if self.world == 1:
            return local
        sizes = self.block_sizes(total)
        padded = torch.nn.functional.pad(local, (0, max(sizes) - local.shape[1])).contiguous()
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([part[:, :size] for part, size in zip(parts, sizes, strict=True)], dim=1)

    def gather_rows(self, local: torch.Tensor, total: int) -> torch.Tensor | None:
        """`[C_r, ...] -> [C, ...]`: every process's block of the `total` rows (`block`), on the CPU of
        the main process (None on the others), received one block at a time so that no device holds
        more than its own block."""
        if self.world == 1:
            return local.cpu()
        sizes = self.block_sizes(total)
        if not self.is_main:
            if sizes[self.rank]:
                dist.send(local.contiguous(), dst=0)
            return None
        parts = [local.cpu()]
        for rank in range(1, self.world):
            part = local.new_empty((sizes[rank], *local.shape[1:]))
            if sizes[rank]:
                dist.recv(part, src=rank)
            parts.append(part.cpu())
        return torch.cat(parts)

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


_joined = 0  # process groups this process has created (the same count on every process)
_created = False  # whether `join` created the group in use (a group made elsewhere is left alone)


def join(device: str) -> Group:
    """Join the process group that `torchrun` describes in the environment (`WORLD_SIZE` > 1), with
    nccl on CUDA and gloo on the CPU; a single process needs no group. Every command joins its own
    group and leaves it at its end (`leave`); each group keeps its addresses under its own prefix in
    torchrun's store, as a later group must not find an earlier one's (closed) addresses there."""
    global _joined, _created
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    if not dist.is_initialized():
        store, rank, world = next(dist.rendezvous("env://"))
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", rank=rank, world_size=world,
                                store=dist.PrefixStore(f"softtopk/{_joined}", store))
        _joined, _created = _joined + 1, True
    return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def leave(finished: bool) -> None:
    """Leave the process group that `join` created, if any. After a finished command every process first
    waits for all others, so that none exits or starts its next command while another still works
    (e.g. the main one writing the report); then each one destroys its part of the group. After a
    failure there is no wait: the group goes at once, so the other processes' pending or next
    collectives fail instead of waiting for this one, and torchrun ends the job."""
    global _created
    if not _created:
        return
    try:
        if finished:
            dist.barrier()
    finally:
        dist.destroy_process_group()
        _created = False
