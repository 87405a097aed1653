"""Embedding files (the paper's ImageNet setting): .pt dicts and .npz archives."""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest
import torch

from softtopk_experiments.data.embeddings import load_embeddings
from softtopk_experiments.data.splits import DataError, Splits


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
        "not a readable .npz/.pt embedding file (": b"not a torch file",
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
    with pytest.raises(DataError, match="not a readable .npz/.pt embedding file .it holds object arrays"):
        load_embeddings(path)
    path.write_bytes(pickle.dumps({"train_embeddings": [1.0]}))  # numpy would unpickle it
    with pytest.raises(DataError, match=r"\(not an .npz archive"):
        load_embeddings(path)
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "array.npy").rename(path)
    with pytest.raises(DataError, match="an .npy array, not an .npz archive"):
        load_embeddings(path)


class _Exploit:
    """Unpickling this runs code: creates the file `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_embedding_files_never_run_code_and_never_suggest_unsafe_loading(tmp_path, legacy):
    marker, path = tmp_path / "executed", tmp_path / "evil.pt"
    content = {"train_embeddings": _Exploit(marker)}
    if legacy:
        path.write_bytes(pickle.dumps(content))
    else:
        torch.save(content, path)
    with pytest.raises(DataError) as error:
        load_embeddings(path)
    message = str(error.value)
    assert "not a readable .npz/.pt embedding file (it holds Python objects" in message
    assert "weights_only" not in message and "unsafe" not in message and "\n" not in message
    assert not marker.exists()
