"""A run's training loss as one module, the model and its loss together: `forward(inputs, target)`
returns the batch's mean loss. The trainer back-propagates it, and DDP wraps it, so the gradients are
synchronised whichever way the loss is computed.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn

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


def split_head(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """`(body, head)` of a probe (`models.embedding_probe`): its last layer, a linear head, and what
    comes before it (nothing for a linear probe)."""
    if isinstance(model, nn.Linear):
        return nn.Identity(), model
    if isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Linear):
        return model[:-1], model[-1]
    raise ValueError(f"a fused head needs a model that ends in a linear layer, got {type(model).__name__}")


class FusedObjective(nn.Module):
    """The probe's linear head and the loss computed together, `head_loss(body(inputs), W, target,
    b)` (`softtopk.LinearTopKCrossEntropyLoss`), in row chunks without a batch's `[N, C]` logits; under
    autocast its matmuls run in the autocast dtype and the loss in float32."""

    def __init__(self, model: nn.Module, head_loss: nn.Module, autocast: Autocast) -> None:
        super().__init__()
        self.body, self.head = split_head(model)
        self.head_loss, self.autocast = head_loss, autocast

    def forward(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.head_loss(self.body(inputs), self.head.weight, target, self.head.bias)
