"""Loaders of user-supplied data (ImageNet embedding files, CIFAR-100 folders) and the data cache."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch

from softtopk.experiments.cifar import load_cifar100
from softtopk.experiments.data_cache import cached
from softtopk.experiments.embeddings import load_embeddings
from softtopk.experiments.splits import DataError, Splits


def _arrays(n_train=12, n_test=5, dim=4, dtype=torch.float32, label_dtype=torch.int32, classes=7):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n_train, dim, generator=g).to(dtype),
            torch.randint(0, classes, (n_train,), generator=g).to(label_dtype),
            torch.randn(n_test, dim, generator=g).to(dtype),
            torch.randint(0, classes, (n_test,), generator=g).to(label_dtype))


STANDARD = ("train_embeddings", "train_labels", "test_embeddings", "test_labels")
IMAGENET21K = ("imagenet21k_train_embeddings", "imagenet21k_train_labels",
               "imagenet21k_val_embeddings", "imagenet21k_val_labels")
EFFICIENTNET = ("train_embeddings", "train_labels", "val_embeddings", "val_labels")


def _check_loaded(splits: Splits, arrays) -> None:
    train_x, train_y, test_x, test_y = arrays
    assert torch.equal(splits.train_x, train_x) and splits.train_x.dtype == train_x.dtype
    assert torch.equal(splits.test_x, test_x) and splits.test_x.dtype == test_x.dtype
    assert splits.train_y.dtype == splits.test_y.dtype == torch.int64
    assert torch.equal(splits.train_y, train_y.long()) and torch.equal(splits.test_y, test_y.long())
    assert splits.num_classes == int(torch.cat([train_y, test_y]).max()) + 1


@pytest.mark.parametrize("keys", [STANDARD, IMAGENET21K, EFFICIENTNET])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_embeddings_torch_files(tmp_path, keys, dtype):
    arrays = _arrays(dtype=dtype, label_dtype=torch.int16)
    path = tmp_path / "emb.p"
    torch.save({**dict(zip(keys, arrays, strict=True)), "extra": "ignored"}, path)
    _check_loaded(load_embeddings(path), arrays)


def test_embeddings_prefer_val_over_test_and_are_memory_mapped(tmp_path):
    arrays, other = _arrays(), _arrays(n_test=3)
    path = tmp_path / "both.pt"
    torch.save({**dict(zip(EFFICIENTNET, arrays, strict=True)),
                **dict(zip(STANDARD[2:], other[2:], strict=True))}, path)
    splits = load_embeddings(path)
    _check_loaded(splits, arrays)
    if sys.platform.startswith("linux"):  # the tensors stay in the file instead of being read into memory
        with open("/proc/self/maps") as maps:
            assert str(path) in maps.read()


def test_embeddings_legacy_torch_format(tmp_path):
    arrays = _arrays()
    path = tmp_path / "legacy.p"
    torch.save(dict(zip(STANDARD, arrays, strict=True)), path, _use_new_zipfile_serialization=False)
    _check_loaded(load_embeddings(path), arrays)


def test_embeddings_npz(tmp_path):
    arrays = _arrays(dtype=torch.float16, label_dtype=torch.uint8)
    path = tmp_path / "emb.npz"
    np.savez(path, **{k: a.numpy() for k, a in zip(STANDARD, arrays, strict=True)})
    _check_loaded(load_embeddings(path), arrays)


def _bad_embedding_files():
    x, y, tx, ty = _arrays()
    return {
        "does not exist": None,
        "found keys: train_embeddings, train_labels": {"train_embeddings": x, "train_labels": y},
        "has 12 rows but train_labels has 11 labels": dict(zip(STANDARD, (x, y[:-1], tx, ty), strict=True)),
        "test_embeddings has 5 rows": dict(zip(STANDARD, (x, y, tx, ty[:3]), strict=True)),
        "labels must be >= 0, got -1": dict(zip(STANDARD, (x, y, tx, torch.full_like(ty, -1)), strict=True)),
        "train_embeddings must be a non-empty float array": dict(
            zip(STANDARD, (x[:, 0], y, tx, ty), strict=True)),
        "must be a non-empty float array [N, D], got torch.int64": dict(
            zip(STANDARD, (x.long(), y, tx.long(), ty), strict=True)),
        "train_labels must be an integer array": dict(zip(STANDARD, (x, y.float(), tx, ty), strict=True)),
        "test_labels must be an integer array [N], got torch.int32 of shape (5, 1)": dict(
            zip(STANDARD, (x, y, tx, ty[:, None]), strict=True)),
        "train_embeddings has 4 dimensions but test_embeddings has 3": dict(
            zip(STANDARD, (x, y, tx[:, :3], ty), strict=True)),
        "must be an array or tensor, got list": dict(zip(STANDARD, (x, y.tolist(), tx, ty), strict=True)),
        "must hold a dict of arrays, got Tensor": x,
        "cannot read embedding file": b"not a torch file",
    }


@pytest.mark.parametrize("message", list(_bad_embedding_files()))
def test_embeddings_bad_files(tmp_path, message):
    content = _bad_embedding_files()[message]
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(DataError, match="^[^\n]*$") as error:
        load_embeddings(path)
    assert message in str(error.value)


def test_embeddings_bad_npz(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, train_embeddings=np.zeros((2, 3), np.float32))
    with pytest.raises(DataError, match="found keys: train_embeddings$"):
        load_embeddings(path)
    np.savez(path, train_embeddings=np.array([object()]))
    with pytest.raises(DataError, match="cannot read embedding file"):
        load_embeddings(path)


# --- CIFAR-100 -----------------------------------------------------------------------------------------

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


# --- cache ---------------------------------------------------------------------------------------------


def _splits(seed: int) -> Splits:
    g = torch.Generator().manual_seed(seed)
    return Splits(torch.randn(4, 3, generator=g), torch.tensor([0, 1, 2, 0]), torch.randn(2, 3, generator=g),
                  torch.tensor([1, 2]), 3, ("a", "b", "c"))


def _equal(a: Splits, b: Splits) -> bool:
    tensors = ("train_x", "train_y", "test_x", "test_y")
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in tensors) \
        and a.num_classes == b.num_classes and a.class_names == b.class_names


def test_cache_builds_once_per_key(tmp_path):
    calls = []

    def build(seed):
        calls.append(seed)
        return _splits(seed)

    first = cached("toy", {"seed": 1}, lambda: build(1), tmp_path)
    again = cached("toy", {"seed": 1}, lambda: build(1), tmp_path)
    other = cached("toy", {"seed": 2}, lambda: build(2), tmp_path)
    assert calls == [1, 2]
    assert _equal(first, again) and _equal(first, _splits(1)) and not _equal(first, other)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".pt", ".pt"]  # no temporary files left


def test_cache_keeps_missing_class_names(tmp_path):
    plain = Splits(*list(vars(_splits(0)).values())[:5])
    cached("plain", {}, lambda: plain, tmp_path)
    assert cached("plain", {}, lambda: pytest.fail("rebuilt"), tmp_path).class_names is None


def test_cache_directory_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTTOPK_CACHE", str(tmp_path / "env"))
    cached("toy", {}, lambda: _splits(0), None)
    assert len(list((tmp_path / "env").glob("toy-*.pt"))) == 1


def test_cache_rebuilds_unreadable_file_and_leaves_nothing_on_failure(tmp_path):
    cached("toy", {}, lambda: _splits(0), tmp_path)
    (path,) = tmp_path.iterdir()
    path.write_bytes(b"truncated")
    assert _equal(cached("toy", {}, lambda: _splits(0), tmp_path), _splits(0))

    def failing():
        raise DataError("bad data")

    with pytest.raises(DataError):
        cached("toy", {"other": 1}, failing, tmp_path)
    assert list(tmp_path.iterdir()) == [path]
