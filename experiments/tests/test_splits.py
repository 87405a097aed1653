"""The validation part held out of train."""

from __future__ import annotations

import pytest
import torch

from softtopk_experiments.data.splits import Splits, validation_count, validation_split


def _splits(n: int, classes: int = 10) -> Splits:
    labels = torch.zeros(n, dtype=torch.int8)  # only the count matters
    return Splits(torch.zeros(n, 1), labels, torch.zeros(1, 1), labels[:1], classes)


def test_validation_split_is_a_seeded_partition():
    splits = _splits(300)
    train, val = validation_split(splits, 0.1, seed=3)
    assert val.shape == (30,) and train.shape == (270,)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(300))
    assert torch.equal(validation_split(splits, 0.1, seed=3)[1], val)
    assert not torch.equal(validation_split(splits, 0.1, seed=4)[1], val)
    assert validation_split(splits, 25, seed=3)[1].shape == (25,)


@pytest.mark.parametrize(("n", "classes", "expected"), [
    (52_000, 148, 5_200), (1_281_167, 1000, 50_000), (11_000_000, 10_450, 100_000)])
def test_default_validation_size_gives_the_papers_numbers(n, classes, expected):
    assert validation_count(_splits(n, classes), None) == expected


@pytest.mark.parametrize("val_size", [300, 1000, 1e-4])
def test_each_part_keeps_a_sample(val_size):
    with pytest.raises(ValueError, match="must leave at least one sample in each part"):
        validation_count(_splits(300), val_size)
