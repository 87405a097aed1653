"""The on-disk cache of derived data sets."""

from __future__ import annotations

import pytest
import torch

from softtopk_experiments.data.cache import cached
from softtopk_experiments.data.splits import DataError, Splits


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
