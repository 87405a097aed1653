"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_trains():
    (quick_start,) = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    torch.manual_seed(0)
    names: dict = {}
    exec(compile(quick_start, "README.md", "exec"), names)
    loss, model = names["loss"], names["model"]
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    grad = model.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
