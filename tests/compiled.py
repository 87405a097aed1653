"""The check the relaxations' compile tests share."""

from __future__ import annotations

from collections.abc import Callable

import torch


def assert_compiles_like_eager(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
    """`fn(x)` compiled whole (fullgraph) equals eager mode, in its value and its gradient in x."""
    torch._dynamo.reset()
    eager, compiled = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected, actual = fn(eager), torch.compile(fn, fullgraph=True)(compiled)
    expected.backward()
    actual.backward()
    torch.testing.assert_close(actual, expected)
    torch.testing.assert_close(compiled.grad, eager.grad)
