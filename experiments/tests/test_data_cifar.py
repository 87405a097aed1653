"""CIFAR-100 from a local copy of the official cifar-100-python folder."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from softtopk_experiments.data.cifar import load_cifar100
from softtopk_experiments.data.splits import DataError

NAMES = [f"class_{i}".encode() for i in range(100)]


def _write_cifar(root, n_train=6, n_test=4, protocol=pickle.HIGHEST_PROTOCOL, numpy1_paths=False, **override):
    """A fake `cifar-100-python/` folder in the official layout; `override` replaces whole files."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {"meta": {b"fine_label_names": NAMES, b"coarse_label_names": [b"c"] * 20}}
    for part, n in [("train", n_train), ("test", n_test)]:
        files[part] = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                       b"fine_labels": rng.integers(0, 100, n).tolist(), b"coarse_labels": [0] * n}
    files.update(override)
    for name, content in files.items():
        if content is None:
            continue
        data = pickle.dumps(content, protocol=protocol)
        if numpy1_paths:  # pickles written with numpy 1.x, like the official files
            data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(data)
    return folder, files


@pytest.mark.parametrize("protocol,numpy1_paths", [(pickle.HIGHEST_PROTOCOL, False), (2, True)])
def test_cifar100_loads_official_layout(tmp_path, protocol, numpy1_paths):
    folder, files = _write_cifar(tmp_path, protocol=protocol, numpy1_paths=numpy1_paths)
    for where in (folder, tmp_path):  # the folder itself or the folder that holds it
        splits = load_cifar100(where)
        assert splits.train_x.shape == (6, 3, 32, 32) and splits.test_x.shape == (4, 3, 32, 32)
        assert splits.train_x.dtype == torch.uint8 and splits.train_y.dtype == torch.int64
        assert splits.num_classes == 100 and splits.class_names[7] == "class_7"
        data = files["test"][b"data"]
        # row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major
        assert splits.test_x[2, 1, 3, 5] == data[2, 1024 + 3 * 32 + 5]
        assert splits.test_y.tolist() == files["test"][b"fine_labels"]


def _bad_cifar_cases():
    images = np.zeros((3, 3072), np.uint8)
    return {
        "meta does not exist": {"meta": None},
        "test does not exist": {"test": None},
        "must hold b'fine_label_names'": {"meta": {b"label_names": NAMES}},
        "b'fine_labels' must be a list of integers, got NoneType": {"train": {b"data": images}},
        "b'fine_labels' has shape (2,) but b'data' has 3 images": {
            "train": {b"data": images, b"fine_labels": [0, 1]}},
        "b'fine_labels' must be integers in [0, 100)": {
            "test": {b"data": images, b"fine_labels": [0, 100, 3]}},
        "b'data' must be a uint8 array [N, 3072], got uint8 of shape (3, 3000)": {
            "train": {b"data": images[:, :3000], b"fine_labels": [0, 1, 2]}},
        "b'data' must be a uint8 array [N, 3072], got float32": {
            "train": {b"data": images.astype(np.float32), b"fine_labels": [0, 1, 2]}},
        "must hold a dict, got list": {"test": [1, 2]},
    }


@pytest.mark.parametrize("message", list(_bad_cifar_cases()))
def test_cifar100_bad_folders(tmp_path, message):
    folder, _ = _write_cifar(tmp_path, **_bad_cifar_cases()[message])
    with pytest.raises(DataError, match="^[^\n]*$") as error:
        load_cifar100(folder)
    assert message in str(error.value)


class _Exploit:
    def __reduce__(self):
        return (exec, ("raise SystemExit('executed')",))


def test_cifar100_refuses_pickles_that_run_code(tmp_path):
    folder, _ = _write_cifar(tmp_path, train=_Exploit())
    with pytest.raises(DataError, match="unexpected object builtins.exec"):
        load_cifar100(folder)


def test_cifar100_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_cifar100(tmp_path / "nowhere")
