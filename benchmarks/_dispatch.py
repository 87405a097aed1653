"""What one call dispatches: the number of aten ops (views excluded) and the peak memory of the
tensors it creates, seen through a `TorchDispatchMode`; device-independent, unlike a timer."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class Watch(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.paused = False  # while True, ops go uncounted (count_ops: a kernel launch's own copies)
        self.live = self.peak = 0
        self.storages: set[int] = set()

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self.storages or storage.nbytes() == 0:
            return
        self.storages.add(key)
        self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._release, key, storage.nbytes())

    def _release(self, key: int, nbytes: int) -> None:
        self.storages.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view and not self.paused:
            self.ops += 1
            for tensor in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(tensor, torch.Tensor):
                    self._track(tensor)
        return out


def dispatch_stats(fn: Callable[[], object]) -> tuple[int, int]:
    """(aten ops, peak bytes of the tensors created and alive at once) of one call `fn()`."""
    with Watch() as watch:
        fn()
    return watch.ops, watch.peak
