"""A run's training loss as one module, the model and its loss together: `forward(inputs, target)`
returns the batch's mean loss. The trainer back-propagates it, and DDP wraps it when the batch is split
over processes, so the gradients are synchronised whichever way the loss is computed; a class-sharded
head's loss is the whole batch's on every process, and its gradients need no synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn

from softtopk_experiments.settings.losses import make_head_loss
from softtopk_experiments.settings.run_config import RunConfig
from softtopk_experiments.training.class_sharding import ClassShardedLinear
from softtopk_experiments.training.distributed import Group
from softtopk_experiments.training.models import split_head

Autocast = Callable[[], AbstractContextManager]


class LogitsObjective(nn.Module):
    """`loss(model(inputs), target)`: the model's logits `[N, C]` under autocast, the loss in float32."""

    def __init__(self, model: nn.Module, loss: nn.Module, autocast: Autocast) -> None:
        super().__init__()
        self.model, self.loss, self.autocast = model, loss, autocast

    def forward(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            logits = self.model(inputs)
        return self.loss(logits.float(), target)


class FusedObjective(nn.Module):
    """The probe's linear head and the loss computed together, `head_loss(body(inputs), W, target,
    b)` (`softtopk.LinearTopKCrossEntropyLoss`), in row chunks without a batch's `[N, C]` logits; under
    autocast its matmuls run in the autocast dtype and the loss in float32. With a class-sharded head,
    W and b are this process's block and `head_loss` the sharded loss (`losses.ShardedHeadLoss`)."""

    def __init__(self, model: nn.Module, head_loss: nn.Module, autocast: Autocast) -> None:
        super().__init__()
        self.body, self.head = split_head(model)
        if not isinstance(self.head, (nn.Linear, ClassShardedLinear)):
            raise ValueError(f"a fused head needs a model that ends in a linear layer, got "
                             f"{type(self.head).__name__}")
        self.head_loss, self.autocast = head_loss, autocast

    def forward(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.head_loss(self.body(inputs), self.head.weight, target, self.head.bias)


def make_objective(config: RunConfig, model: nn.Module, autocast: Autocast, data: Group,
                   device: torch.device) -> nn.Module:
    """The objective of `config.head` on `model`: the logits and the loss (also the train protocol's,
    which has no `head`), or the head and its loss fused, whole or class-sharded; wrapped in DDP when
    the `data` group splits each batch over several processes."""
    if config.head in ("fused", "sharded"):
        head_loss = make_head_loss(config.settings, sharded=config.head == "sharded")
        objective: nn.Module = FusedObjective(model, head_loss, autocast)
    else:
        objective = LogitsObjective(model, config.loss, autocast)
    if data.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        objective = nn.parallel.DistributedDataParallel(objective, device_ids=ids)
    return objective
