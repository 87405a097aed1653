"""The relaxation registry: one record per method, read by the API, the loss, the command line and
the README's engine table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import softtopk
from softtopk.relax import DISTRIBUTIONS, METHODS, NETWORK_METHODS, RELAXATIONS
from softtopk.relax.networks import sigmoids

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_every_method_is_one_record_everywhere():
    assert METHODS == tuple(RELAXATIONS) == softtopk.METHODS
    assert all(r.name == name for name, r in RELAXATIONS.items())


def test_the_network_names_come_from_the_registry_and_the_sigmoid_table():
    assert NETWORK_METHODS == tuple(name for name, r in RELAXATIONS.items() if "distribution" in r.options)
    assert NETWORK_METHODS == ("bitonic", "splitter_selection", "odd_even")
    assert all(softtopk.sorting_network(kind, 5, 2) for kind in NETWORK_METHODS)  # each has its layout
    with pytest.raises(ValueError, match="kind must be one of"):
        softtopk.sorting_network("neuralsort", 5)
    assert DISTRIBUTIONS == tuple(sigmoids.DISTRIBUTIONS)
    assert set(sigmoids.SIGMOIDS) < set(DISTRIBUTIONS)


@pytest.mark.parametrize("name", METHODS)
def test_the_readme_table_shows_the_record(name):
    r = RELAXATIONS[name]
    row = f"| `'{name}'` ({r.title}) | {r.family} | {r.cost} | {'yes' if r.needs_m else 'no'} | {r.output} | "
    assert row + r.reference + " |" in README


@pytest.mark.parametrize("name", METHODS)
def test_bind_passes_only_the_options_a_method_takes(name):
    full, item = RELAXATIONS[name].bind(2.0, distribution="logistic", art_lambda=0.25)
    scores = torch.randn(3, 6, dtype=torch.float64)
    p = full(scores, 4)
    assert p.shape == (3, 6, 4)
    torch.testing.assert_close(item(scores, torch.tensor([[1], [0], [5]]), 4)[:, 0],
                               p[torch.arange(3), torch.tensor([1, 0, 5])], atol=1e-6, rtol=0)
