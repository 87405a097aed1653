"""Mixup (Zhang et al., ICLR 2018) and CutMix (Yun et al., ICCV 2019) of a batch of images, with
probability targets, drawn from an explicit generator so that a run can be replayed exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def _rng(generator: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded from `generator` (for Beta draws, which torch cannot seed)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))


def mixup(images: torch.Tensor, target: torch.Tensor, lam: float, partner: torch.Tensor) -> tuple:
    """`lam * images + (1 - lam) * images[partner]` as float, and the targets mixed alike."""
    mixed = lam * images.float() + (1 - lam) * images[partner].float()
    return mixed, lam * target + (1 - lam) * target[partner]


def cutmix(images: torch.Tensor, target: torch.Tensor, lam: float, partner: torch.Tensor,
           centre: tuple[float, float]) -> tuple:
    """Paste a box of `images[partner]` of about `(1 - lam)` of the area, centred at `centre`
    (fractions of height and width, the box clipped at the border), into `images`; the targets are
    weighted by the areas actually kept."""
    h, w = images.shape[-2:]
    side = math.sqrt(1 - lam)
    cy, cx = centre[0] * h, centre[1] * w
    top, bottom = (min(max(round(cy + d * side * h / 2), 0), h) for d in (-1, 1))
    left, right = (min(max(round(cx + d * side * w / 2), 0), w) for d in (-1, 1))
    pasted = images.clone()
    pasted[..., top:bottom, left:right] = images[partner][..., top:bottom, left:right]
    kept = 1 - (bottom - top) * (right - left) / (h * w)
    return pasted, kept * target + (1 - kept) * target[partner]


@dataclass(frozen=True)
class Mixing:
    """Mixup with weight `lam ~ Beta(mixup, mixup)` and/or CutMix with kept area `lam ~ Beta(cutmix,
    cutmix)`, each batch paired with a random permutation of itself; with both, each batch takes one
    of the two with probability 1/2 (as timm does). 0 turns one off."""

    mixup: float = 0.0
    cutmix: float = 0.0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`images [N, C, H, W]`, `labels [N]` -> mixed images and probability targets `[N, num_classes]`
        (rows summing to 1). Randomness from `generator` only."""
        target = torch.nn.functional.one_hot(labels, num_classes).float()
        partner = torch.randperm(labels.shape[0], generator=generator)
        rng = _rng(generator)
        use_cutmix = self.cutmix > 0 and (self.mixup == 0 or rng.random() < 0.5)
        if use_cutmix:
            lam = float(rng.beta(self.cutmix, self.cutmix))
            return cutmix(images, target, lam, partner, (float(rng.random()), float(rng.random())))
        return mixup(images, target, float(rng.beta(self.mixup, self.mixup)), partner)
