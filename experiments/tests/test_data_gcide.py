"""The shipped GCIDE subject-field set: its TF-IDF features and its pretrained sentence embeddings."""

from __future__ import annotations

import collections
import gzip
import io

import linear_probe
import numpy as np
import pytest
import torch

from softtopk_experiments.data import gcide, gcide_minilm, text_sets
from softtopk_experiments.data.gcide import load_gcide, read_gcide_table
from softtopk_experiments.data.gcide_minilm import load_gcide_minilm
from softtopk_experiments.data.splits import DataError

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def tfidf(tmp_path_factory):
    return load_gcide(cache_dir=tmp_path_factory.mktemp("cache"), dim=32)


def probe_accuracy(splits, epochs: int, lr: float) -> tuple[float, float]:
    return linear_probe.probe_accuracy(splits.train_x, splits.train_y, splits.test_x, splits.test_y,
                                       splits.num_classes, epochs, lr)


def test_shipped_table_has_the_documented_classes():
    data = text_sets.read_packaged(gcide.DATA_FILE, "")
    labels, texts = read_gcide_table(data)
    counts = collections.Counter(labels)
    assert len(texts) == 13_488 and len(counts) == 70
    assert min(counts.values()) >= 40 and max(counts.values()) == 500
    assert {"Zool.", "Bot.", "Law", "Scots Law", "Her.", "Mus.", "Card Playing"} <= set(counts)
    assert not any("&" in label for label in counts) and not {"Zool", "Music", "Mining."} & set(counts)
    assert len(set(zip(labels, texts, strict=True))) == len(texts)
    assert all(": " in text and not set("{}[]\\") & set(text) for text in texts)
    assert "Aileron: A small plane or surface capable of being manipulated" in "\n".join(texts)
    licence = text_sets.read_packaged("GCIDE_LICENSE.txt", "").decode()
    assert "dict-gcide" in licence and "either version 2, or (at your option)" in licence


def test_tfidf_features_split_and_cache(tfidf, tmp_path, monkeypatch):
    assert tfidf.train_x.shape == (10_790, 32) and tfidf.test_x.shape == (2_698, 32)
    assert tfidf.train_x.dtype == torch.float32 and tfidf.train_y.dtype == torch.int64
    assert tfidf.num_classes == 70 and tfidf.class_names == tuple(sorted(tfidf.class_names))
    train_counts, test_counts = (torch.bincount(y, minlength=70) for y in (tfidf.train_y, tfidf.test_y))
    assert int(test_counts.min()) >= 8 and int(train_counts.min()) >= 32
    assert torch.allclose(test_counts / (train_counts + test_counts), torch.tensor(0.2), atol=0.02)
    top1, top5 = probe_accuracy(tfidf, epochs=5, lr=3e-2)
    assert top1 > 0.2 and top5 > top1 + 0.15  # chance is 1/70

    load_gcide(cache_dir=tmp_path, dim=4)
    monkeypatch.setattr(text_sets, "tfidf_svd_splits", lambda *args: pytest.fail("cache miss"))
    load_gcide(cache_dir=tmp_path, dim=4)
    with pytest.raises(ValueError, match="dim"):
        load_gcide(cache_dir=tmp_path, dim=-1)


def test_wrong_class_count_is_a_data_error():
    with pytest.raises(DataError, match="70 fields"):
        read_gcide_table(gzip.compress(b"label\ttext\nZool.\tdog: a quadruped animal\n"))


def test_embeddings_match_the_tfidf_split_and_are_learnable(tfidf):
    splits = load_gcide_minilm()
    assert splits.train_x.shape == (10_790, 128) and splits.test_x.shape == (2_698, 128)
    assert splits.train_x.dtype == splits.test_x.dtype == torch.float32
    assert splits.class_names == tfidf.class_names and splits.num_classes == 70
    assert torch.equal(splits.train_y, tfidf.train_y) and torch.equal(splits.test_y, tfidf.test_y)
    assert torch.allclose(splits.train_x.mean(0), torch.zeros(128), atol=1e-3)  # PCA of the train rows
    assert float(splits.train_x.norm(dim=1).max()) < 1.0
    top1, top5 = probe_accuracy(splits, epochs=5, lr=3e-2)
    assert top1 > 0.4 and top5 > top1 + 0.15


def _archive(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


GOOD = {"train_embeddings": np.zeros((4, 3), np.float16), "train_labels": np.array([0, 1, 2, 0], np.int16),
        "test_embeddings": np.zeros((2, 3), np.float16), "test_labels": np.array([1, 2], np.int16)}


@pytest.mark.parametrize("content,message", [
    (None, "missing.*build_gcide_minilm.py"),
    (b"not a zip archive", "not a readable .npz"),
    (_archive(**GOOD), "class_names of strings"),
    (_archive(**GOOD, class_names=np.arange(3)), "class_names of strings"),
    (_archive(**GOOD, class_names=np.array(["a", "b"])), "only 2 class_names"),
    (_archive(**{**GOOD, "test_labels": np.array([0.5, 1.0])}, class_names=np.array(["a", "b", "c"])),
     "integer array"),
])
def test_bad_embedding_files(tmp_path, monkeypatch, content, message):
    (tmp_path / "shipped").mkdir()
    if content is not None:
        (tmp_path / "shipped" / gcide_minilm.DATA_FILE).write_bytes(content)
    monkeypatch.setattr(gcide_minilm.resources, "files", lambda package: tmp_path)
    with pytest.raises(DataError, match=message):
        load_gcide_minilm()


def test_a_good_small_archive_loads(tmp_path, monkeypatch):
    (tmp_path / "shipped").mkdir()
    archive = _archive(**GOOD, class_names=np.array(list("abcd")))
    (tmp_path / "shipped" / gcide_minilm.DATA_FILE).write_bytes(archive)
    monkeypatch.setattr(gcide_minilm.resources, "files", lambda package: tmp_path)
    splits = load_gcide_minilm()
    assert splits.train_x.dtype == torch.float32 and splits.train_y.dtype == torch.int64
    assert splits.num_classes == 4 and splits.class_names == tuple("abcd")
