"""Mixup and CutMix: probability targets that match what was mixed, replayable from a generator."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from softtopk_experiments.data.mixing import Mixing, cutmix, mixup


def _batch(n=8, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 6, 6), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, c, (n,), generator=g)
    return images, labels, torch.nn.functional.one_hot(labels, c).float()


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0, 1.0))
def test_mixup_mixes_images_and_targets_alike(lam):
    images, labels, target = _batch()
    partner = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    mixed, probabilities = mixup(images, target, lam, partner)
    assert torch.allclose(mixed, lam * images.float() + (1 - lam) * images[partner].float())
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(8))
    assert torch.allclose(probabilities, lam * target + (1 - lam) * target[partner])


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.3, 0.5, 1.0]), st.sampled_from([0.0, 0.5, 0.9]))
def test_cutmix_weights_the_targets_by_the_pasted_area(lam, cy, cx):
    n = 6
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 2, 8, 8).contiguous()
    target = torch.eye(n)  # image i is class i, every pixel of value i
    partner = torch.roll(torch.arange(n), 1)
    pasted, probabilities = cutmix(images, target, lam, partner, (cy, cx))
    assert pasted.dtype == torch.uint8 and pasted.shape == images.shape
    for i in range(n):
        area = float((pasted[i] == int(partner[i])).float().mean())
        assert set(pasted[i].unique().tolist()) <= {i, int(partner[i])}
        assert probabilities[i, i] == pytest.approx(1 - area)
        assert probabilities[i, partner[i]] == pytest.approx(area)
        assert area <= 1 - lam + 0.25  # clipped at the border; rounded to whole pixels of 8 x 8
        if cy == cx == 0.5:  # centred: nothing clipped
            assert area == pytest.approx(1 - lam, abs=0.25)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(n))


def test_mixing_is_replayable_and_picks_one_method_per_batch():
    images, labels, _ = _batch(n=16, c=4)
    both = Mixing(mixup=0.4, cutmix=1.0)
    a = both(images, labels, 4, torch.Generator().manual_seed(3))
    b = both(images, labels, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    kinds = {both(images, labels, 4, torch.Generator().manual_seed(s))[0].dtype for s in range(12)}
    assert kinds == {torch.uint8, torch.float32}  # CutMix pastes uint8, mixup blends to float
    assert Mixing(cutmix=1.0)(images, labels, 4, torch.Generator())[0].dtype == torch.uint8
    mixed, target = Mixing(mixup=0.4)(images, labels, 4, torch.Generator().manual_seed(0))
    assert mixed.dtype == torch.float32 and target.shape == (16, 4)
    assert torch.allclose(target.sum(dim=1), torch.ones(16)) and bool((target >= 0).all())
