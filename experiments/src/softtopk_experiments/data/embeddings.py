"""Pre-computed ImageNet embeddings (the paper's fine-tuning setting): a dict of four arrays in a
`torch.save` file or an `.npz` archive."""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from softtopk_experiments.data.splits import DataError, Splits

KEY_SETS: tuple[tuple[str, str, str, str], ...] = (
    ("imagenet21k_train_embeddings", "imagenet21k_train_labels",
     "imagenet21k_val_embeddings", "imagenet21k_val_labels"),
    ("train_embeddings", "train_labels", "val_embeddings", "val_labels"),
    ("train_embeddings", "train_labels", "test_embeddings", "test_labels"),
)
"""(train embeddings, train labels, test embeddings, test labels), tried in this order: the
ImageNet-21K-P file and the EfficientNet-L2 file use their validation split as the test split."""


def load_embeddings(path: Path) -> Splits:
    """Embeddings `[N, D]` (float dtype as stored, e.g. float16) and int64 labels `[N]` from `path`.

    A `.npz` archive, or a `torch.save` file of a dict (memory-mapped when saved in the zip format,
    so 10-50 GB files load lazily), holding one of the `KEY_SETS`. `num_classes` is the largest
    label + 1. Raises `DataError` if the file is missing or its keys, shapes or dtypes are wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"embedding file {path} does not exist")
    data = _read(path)
    keys = next((ks for ks in KEY_SETS if all(k in data for k in ks)), None)
    if keys is None:
        found = ", ".join(sorted(map(str, data))[:8]) or "none"
        raise DataError(f"{path} must hold the arrays train_embeddings/train_labels/test_embeddings/"
                        f"test_labels (or the val_* or imagenet21k_* variants); found keys: {found}")
    train_x, train_y, test_x, test_y = (_tensor(data[k], k, path) for k in keys)
    for x, y, x_key, y_key in [(train_x, train_y, *keys[:2]), (test_x, test_y, *keys[2:])]:
        if x.dim() != 2 or not x.is_floating_point() or len(x) == 0:
            raise DataError(f"{path}: {x_key} must be a non-empty float array [N, D], "
                            f"got {x.dtype} of shape {tuple(x.shape)}")
        if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise DataError(f"{path}: {y_key} must be an integer array [N], got {y.dtype} of shape "
                            f"{tuple(y.shape)}")
        if len(x) != len(y):
            raise DataError(f"{path}: {x_key} has {len(x)} rows but {y_key} has {len(y)} labels")
    if train_x.shape[1] != test_x.shape[1]:
        raise DataError(f"{path}: {keys[0]} has {train_x.shape[1]} dimensions but {keys[2]} has "
                        f"{test_x.shape[1]}")
    train_y, test_y = train_y.to(torch.int64), test_y.to(torch.int64)
    low = min(int(train_y.min()), int(test_y.min()))
    if low < 0:
        raise DataError(f"{path}: labels must be >= 0, got {low}")
    num_classes = max(int(train_y.max()), int(test_y.max())) + 1
    return Splits(train_x, train_y, test_x, test_y, num_classes)


def _read(path: Path) -> Mapping:
    """The dict of arrays in `path`, loaded lazily where the format allows. Nothing in the file can
    run code: `.npz` archives are read without pickles, torch files with `weights_only=True`."""
    try:
        if path.suffix == ".npz":
            archive = np.load(path, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("an .npy array, not an .npz archive")
            with archive:
                return {key: archive[key] for key in archive.files}
        with warnings.catch_warnings():  # torch warns about pickle protocols it may not support
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", mmap=zipfile.is_zipfile(path), weights_only=True)
    except Exception as e:  # a damaged file fails in many ways (struct.error, KeyError, ...)
        raise DataError(f"{path} is not a readable .npz/.pt embedding file ({_reason(e)}); expected an .npz "
                        f"archive or a torch.save dict of tensors") from None
    if not isinstance(data, Mapping):
        raise DataError(f"{path} must hold a dict of arrays, got {type(data).__name__}")
    return data


def _reason(error: Exception) -> str:
    """A short reason that never suggests loading the file unsafely (torch's own message does)."""
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in text or "Unsupported global" in text:
        return ("it holds Python objects besides tensors and containers, which are never loaded from user "
                "files")
    if "Object arrays" in text:
        return "it holds object arrays, which are never loaded from user files"
    if "pickled" in text:
        return "not an .npz archive: numpy would read it as a pickle, which is never loaded from user files"
    if isinstance(error, (zipfile.BadZipFile, EOFError)) or "zip" in text.lower():
        return "a damaged or truncated archive"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return text.splitlines()[0][:120] if text.strip() else type(error).__name__


def _tensor(value: object, key: str, path: Path) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, torch.Tensor):
        return value
    raise DataError(f"{path}: {key} must be an array or tensor, got {type(value).__name__}")
