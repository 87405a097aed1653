"""CIFAR-100 from a local copy of the official `cifar-100-python/` folder (nothing is downloaded)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from softtopk_experiments.data.splits import DataError, Splits

_ALLOWED_GLOBALS = {
    (f"numpy.{core}.{module}", name)
    for core in ("core", "_core")
    for module, name in [("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")]
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only, so a foreign pickle cannot run code."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def load_cifar100(folder: Path) -> Splits:
    """CIFAR-100 images `[N, 3, 32, 32]` uint8 and fine labels `[N]` int64 (50,000 train, 10,000 test).

    `folder` is the extracted `cifar-100-python/` folder (or a folder that contains it), holding the
    pickled `train`, `test` and `meta` files. Raises `DataError` if a file is missing or malformed.
    """
    folder = Path(folder)
    if (folder / "cifar-100-python").is_dir():
        folder = folder / "cifar-100-python"
    names = _unpickle(folder / "meta").get(b"fine_label_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, bytes) for n in names):
        raise DataError(f"{folder / 'meta'} must hold b'fine_label_names', a list of byte strings")
    class_names = tuple(n.decode("utf-8") for n in names)
    splits = [tensor for part in ("train", "test") for tensor in _split(folder / part, len(class_names))]
    return Splits(*splits, num_classes=len(class_names), class_names=class_names)


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"CIFAR-100 file {path} does not exist (expected the cifar-100-python folder)")
    try:
        with open(path, "rb") as f:
            data = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as e:
        raise DataError(f"cannot read CIFAR-100 file {path}: {e}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} must hold a dict, got {type(data).__name__}")
    return data


def _split(path: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images `[N, 3, 32, 32]` uint8 and labels `[N]` int64 from one pickled CIFAR-100 batch file."""
    data = _unpickle(path)
    images, labels = data.get(b"data"), data.get(b"fine_labels")
    if not isinstance(images, np.ndarray):
        raise DataError(f"{path}: b'data' must be a uint8 array [N, 3072], got {type(images).__name__}")
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: b'data' must be a uint8 array [N, 3072], got {images.dtype} of shape "
                        f"{images.shape}")
    if not isinstance(labels, (list, np.ndarray)):
        raise DataError(f"{path}: b'fine_labels' must be a list of integers, got {type(labels).__name__}")
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise DataError(f"{path}: b'fine_labels' has shape {labels.shape} but b'data' has "
                        f"{len(images)} images")
    if labels.dtype.kind not in "iu" or (labels.size and not 0 <= labels.min() <= labels.max() < num_classes):
        raise DataError(f"{path}: b'fine_labels' must be integers in [0, {num_classes})")
    images = torch.from_numpy(np.ascontiguousarray(images.reshape(-1, 3, 32, 32)))
    return images, torch.from_numpy(labels.astype(np.int64))
