"""The container every data set loader returns, the error it raises on bad data, and the rule that
holds a validation part out of train."""

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


def validation_count(splits: Splits, val_size: float | None) -> int:
    """How many training samples are held out for validation: `val_size` as a fraction (< 1) or a
    count (>= 1); None is the embedding rule, 10% of train, at most 50,000 (100,000 above 5,000
    classes), which gives the paper's 50,000 for ImageNet-1K and 100,000 for ImageNet-21K-P. Raises
    ValueError unless both parts keep at least one sample."""
    n = splits.train_y.shape[0]
    if val_size is None:
        count = min(round(0.1 * n), 100_000 if splits.num_classes > 5000 else 50_000)
    else:
        count = round(val_size * n) if val_size < 1 else int(val_size)
    if not 1 <= count < n:
        shown = "by the 10% rule" if val_size is None else f"{val_size:g}"
        raise ValueError(f"`val_size` {shown} gives {count} validation samples out of {n} in train; "
                         f"it must leave at least one sample in each part")
    return count


def validation_split(splits: Splits, val_size: float | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices `(train [N - V], val [V])` into `splits.train_*`: a random validation part of V =
    `validation_count(splits, val_size)` samples. Indices, not copies, so memory-mapped embeddings
    stay on disk."""
    count = validation_count(splits, val_size)
    order = torch.randperm(splits.train_y.shape[0], generator=torch.Generator().manual_seed(seed))
    return order[count:], order[:count]
