"""The two models of the paper's protocols: a probe on frozen embeddings and a CIFAR ResNet-18, and
the choice between them."""

from __future__ import annotations

import torch
from torch import nn


def embedding_probe(in_features: int, num_classes: int, hidden: int | None = None) -> nn.Module:
    """A linear layer `[N, in_features] -> [N, num_classes]`, or with `hidden` a one-hidden-layer
    ReLU MLP. The paper fine-tunes only such a head on frozen ImageNet embeddings."""
    for name, value in (("in_features", in_features), ("num_classes", num_classes)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if hidden is None:
        return nn.Linear(in_features, num_classes)
    if hidden < 1:
        raise ValueError(f"hidden must be >= 1 (units of the hidden layer) or None, got {hidden}")
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def split_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """`(body, head)` of a probe (`embedding_probe`, or one whose head was replaced): its last layer and
    what comes before it (nothing for a single layer)."""
    if isinstance(model, nn.Sequential):
        return model[:-1], model[-1]
    return nn.Identity(), model


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection; `[N, c_in, H, W] -> [N, c_out, H/s, W/s]`."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18Cifar(nn.Module):
    """ResNet-18 for small images: 3x3 stem with stride 1 and no max-pool, four stages of two basic
    blocks with `width, 2*width, 4*width, 8*width` channels (strides 1, 2, 2, 2), global average pool
    and a linear classifier. `[N, in_channels, H, W] -> [N, num_classes]`.

    With `width=64`, `in_channels=3`, `num_classes=100` it has 11,220,132 parameters.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels), ("width", width)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        blocks: list[nn.Module] = []
        c_in = width
        for stage in range(4):
            c_out = width * 2**stage
            for i in range(2):
                blocks.append(BasicBlock(c_in, c_out, stride=2 if stage > 0 and i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(self.stem(x)).mean(dim=(2, 3))  # [N, 8*width]
        return self.fc(features)


def build_model(protocol: str, in_shape: tuple[int, ...], num_classes: int, hidden: int | None = None,
                width: int | None = None) -> nn.Module:
    """The model of a protocol for inputs of shape `[N, *in_shape]`: 'finetune' an `embedding_probe`
    on features `[D]`, 'train' a `ResNet18Cifar` on images `[C, H, W]`."""
    if protocol == "finetune":
        return embedding_probe(in_shape[0], num_classes, hidden)
    return ResNet18Cifar(num_classes, in_shape[0], width=width or 64)
