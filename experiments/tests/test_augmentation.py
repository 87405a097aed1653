from __future__ import annotations

import pytest
import torch

from softtopk_experiments.data.augmentation import Augmentation, random_crop, random_hflip


def _images(n=16, c=2, h=6, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, c, h, w), generator=g, dtype=torch.uint8)  # no zeros: padding shows


def _window_offsets(out, images, p):
    """For each output image, the first shift (dy, dx) of the padded input it equals (or None)."""
    padded = torch.nn.functional.pad(images, (p,) * 4)
    h, w = images.shape[2:]
    return [next(((dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                  if torch.equal(out[i], padded[i, :, dy:dy + h, dx:dx + w])), None)
            for i in range(images.shape[0])]


def test_random_crop_cuts_a_window_of_the_padded_image():
    images, p = _images(n=200), 2
    out = random_crop(images, p, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    offsets = _window_offsets(out, images, p)
    assert None not in offsets
    assert len(set(offsets)) == (2 * p + 1) ** 2  # every shift occurs in 200 draws
    assert torch.equal(random_crop(images, 0, torch.Generator()), images)


def test_random_hflip_mirrors_about_half():
    images = _images(n=400)
    out = random_hflip(images, torch.Generator().manual_seed(2))
    same = (out == images).flatten(1).all(1)
    mirrored = (out == images.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 150 < int(mirrored.sum()) < 250


def test_augmentation_is_reproducible_from_its_generator():
    images, aug = _images(), Augmentation(crop_padding=4, hflip=True)
    a = aug(images, torch.Generator().manual_seed(5))
    b = aug(images, torch.Generator().manual_seed(5))
    c = aug(images, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_arguments():
    with pytest.raises(ValueError, match="padding must be >= 0"):
        random_crop(_images(), -1, torch.Generator())
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        random_crop(torch.zeros(3, 4, 4, dtype=torch.uint8), 1, torch.Generator())
