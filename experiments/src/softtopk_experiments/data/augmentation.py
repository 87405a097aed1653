"""Batched image augmentations on tensors (no torchvision): random crop with zero padding and
horizontal flip, drawn from an explicit generator so a run can be replayed exactly."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad `images [N, C, H, W]` by `padding` zero pixels on every side and cut a random `H x W`
    window per image (offsets uniform in `[0, 2*padding]`). Same shape and dtype out."""
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if images.dim() != 4:
        raise ValueError(f"images must have shape [N, C, H, W], got {tuple(images.shape)}")
    if padding == 0:
        return images
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)  # [N, C, H + 2p, W + 2p]
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]  # [N, 1, H, 1]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]  # [N, 1, 1, W]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image of `images [N, C, H, W]` left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator).to(images.device) < 0.5  # [N]
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


@dataclass(frozen=True)
class Augmentation:
    """A random crop (if `crop_padding > 0`) followed by a horizontal flip (if `hflip`)."""

    crop_padding: int = 0
    hflip: bool = False

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`images [N, C, H, W] -> [N, C, H, W]`, randomness drawn from `generator` only."""
        if self.crop_padding:
            images = random_crop(images, self.crop_padding, generator)
        if self.hflip:
            images = random_hflip(images, generator)
        return images
