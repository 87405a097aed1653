"""The original difftopk, quietly imported, for numerical comparisons in float64."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch


def difftopk():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return pytest.importorskip("difftopk")


def original_loss(method, inverse_temperature, p_k, classes, m, distribution, art_lambda, top1_mode):
    """The original's TopKCrossEntropyLoss, its networks cast to float64 (it builds them in float32)."""
    module = difftopk()
    with contextlib.redirect_stdout(io.StringIO()):
        loss = module.TopKCrossEntropyLoss(
            method, inverse_temperature, list(p_k), classes, m=m, distribution=distribution,
            art_lambda=art_lambda, top1_mode=top1_mode,
        )
    if hasattr(loss, "top_k_net"):
        loss.top_k_net.sorting_network = [
            [t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in layer]
            for layer in loss.top_k_net.sorting_network
        ]
    return loss


@contextlib.contextmanager
def default_float64():
    """The original builds some constants with the default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
