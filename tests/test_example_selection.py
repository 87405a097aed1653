"""The learned top-k selection example, tiny: a scorer trained through the soft mask learns which
items to keep (far above chance), and the script prints its comparison table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[1] / "examples" / "learned_selection.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("learned_selection", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the dataclass looks its module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_soft_mask_learns_the_selection(example):
    problem = example.Problem(n=8, k=2, d=4, batch=64, steps=120)
    untrained = example.train(example.Problem(n=8, k=2, d=4, steps=0), "soft", seed=0)
    trained = example.train(problem, "soft", seed=0)
    assert untrained["precision"] < 0.6  # chance: k / n = 0.25
    assert trained["precision"] > 0.9
    assert trained["test_mse"] < 0.2 * untrained["test_mse"]


def test_comparison_table(example, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["learned_selection.py", "--seeds", "2", "--steps", "20"])
    example.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("| soft mask (lapsum")
    assert lines[-1].startswith("| hard top-k, straight-through")
