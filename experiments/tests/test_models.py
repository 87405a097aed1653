from __future__ import annotations

import pytest
import torch
from torch import nn

from softtopk_experiments.training.models import ResNet18Cifar, embedding_probe


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet18_cifar_has_the_standard_size():
    model = ResNet18Cifar(num_classes=100)
    assert _params(model) == 11_220_132  # the usual CIFAR ResNet-18 for 100 classes
    stem = model.stem[0]
    assert (stem.kernel_size, stem.stride, stem.in_channels) == ((3, 3), (1, 1), 3)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules()) == 17


@pytest.mark.parametrize(("in_channels", "size"), [(1, 32), (3, 28), (2, 8)])
def test_resnet18_cifar_shapes_and_width(in_channels, size):
    model = ResNet18Cifar(num_classes=7, in_channels=in_channels, width=4)
    x = torch.randn(3, in_channels, size, size)
    assert model(x).shape == (3, 7)
    assert model.fc.in_features == 32  # 8 * width
    # a wider network has ~width^2 as many parameters (convolutions dominate)
    ratio = _params(ResNet18Cifar(7, in_channels, width=8)) / _params(model)
    assert 3.5 < ratio < 4.1


def test_embedding_probe_linear_and_mlp():
    linear = embedding_probe(16, 5)
    assert isinstance(linear, nn.Linear) and _params(linear) == 16 * 5 + 5
    mlp = embedding_probe(16, 5, hidden=8)
    assert _params(mlp) == (16 * 8 + 8) + (8 * 5 + 5)
    assert mlp(torch.randn(4, 16)).shape == (4, 5)


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="hidden must be >= 1"):
        embedding_probe(4, 3, hidden=0)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        embedding_probe(4, 0)
    with pytest.raises(ValueError, match="width must be >= 1"):
        ResNet18Cifar(10, width=0)
