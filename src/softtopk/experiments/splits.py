"""The container every data set loader returns, and the error it raises on bad data."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class DataError(ValueError):
    """A data file or folder is missing or malformed; the message is one line for the user."""


@dataclass(frozen=True)
class Splits:
    """A labelled train and test split.

    `*_x` is either features `[N, D]` (float) or images `[N, C, H, W]` (uint8); `*_y` is `[N]` int64
    with values in `[0, num_classes)`. A validation split is carved from train by the caller.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...] | None = None
