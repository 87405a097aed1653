"""The shipped WordNet noun set and its TF-IDF + SVD features."""

from __future__ import annotations

import collections
import gzip
import re
from importlib import resources

import numpy as np
import pytest
import torch

from softtopk_experiments.data import text_sets, wordnet
from softtopk_experiments.data.splits import DataError
from softtopk_experiments.data.wordnet import load_wordnet, read_wordnet_table, stratified_split

pytest.importorskip("sklearn")

DATA = resources.files("softtopk_experiments.data").joinpath("shipped")


def test_shipped_table_has_the_documented_classes():
    labels, texts = read_wordnet_table(DATA.joinpath(wordnet.DATA_FILE).read_bytes())
    counts = collections.Counter(labels)
    assert len(texts) == 65_647 and len(counts) == 148
    assert min(counts.values()) >= 50
    assert all(re.fullmatch(r"\S.*\.n\.\d\d", label) for label in counts)
    assert counts["organism.n.01"] > 10_000
    assert all(": " in text and "_" not in text.split(": ")[0] for text in texts)
    assert "dog, domestic dog, Canis familiaris: a member of the genus Canis" in "\n".join(texts)
    licence = DATA.joinpath("WORDNET_LICENSE.txt").read_text(encoding="utf-8")
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in licence


@pytest.mark.parametrize("content,message", [
    (b"label\ttext\n", "not a gzipped"),
    (gzip.compress(b"name\ttext\na\tb\n"), "header"),
    (gzip.compress(b"label\ttext\na\tb\nno tab here\n"), "line 3"),
    (gzip.compress(b"label\ttext\na\tb\tc\n"), "line 2"),
    (gzip.compress(b"label\ttext\n"), "no rows"),
])
def test_bad_tables(content, message):
    with pytest.raises(DataError, match=message):
        read_wordnet_table(content)


def test_stratified_split_is_deterministic_and_keeps_every_class():
    y = np.repeat(np.arange(4), [1, 2, 10, 41])
    train, test = stratified_split(y, 0.2, seed=3)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(y)))
    assert np.bincount(y[test], minlength=4).tolist() == [0, 1, 2, 8]
    again = stratified_split(y, 0.2, seed=3)
    other = stratified_split(y, 0.2, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip((train, test), again, strict=True))
    assert not np.array_equal(test, other[1])


def test_load_small_features_and_cache(tmp_path, monkeypatch):
    splits = load_wordnet(cache_dir=tmp_path, dim=8, test_fraction=0.2, seed=0)
    assert splits.train_x.shape == (52_518, 8) and splits.test_x.shape == (13_129, 8)
    assert splits.train_x.dtype == splits.test_x.dtype == torch.float32
    assert splits.train_y.dtype == torch.int64 and splits.num_classes == 148
    assert splits.class_names == tuple(sorted(splits.class_names)) and len(splits.class_names) == 148
    for x in (splits.train_x, splits.test_x):  # unit rows; zero for a text with no training-set word
        norms = x.norm(dim=1)
        assert (((norms - 1).abs() < 1e-5) | (norms == 0)).all() and (norms == 0).sum() <= 5
    train_counts = torch.bincount(splits.train_y, minlength=148)
    test_counts = torch.bincount(splits.test_y, minlength=148)
    assert int(test_counts.min()) >= 10 and int(train_counts.min()) >= 40
    assert torch.allclose(test_counts / (train_counts + test_counts), torch.tensor(0.2), atol=0.01)
    # the features separate the classes: nearest class mean beats chance (1/148) ten times over
    means = torch.stack([splits.train_x[splits.train_y == c].mean(0) for c in range(148)])
    accuracy = ((splits.test_x @ means.T).argmax(1) == splits.test_y).float().mean()
    assert accuracy > 0.07

    monkeypatch.setattr(text_sets, "tfidf_svd_splits", lambda *args: pytest.fail("cache miss"))
    again = load_wordnet(cache_dir=tmp_path, dim=8, test_fraction=0.2, seed=0)
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(again, key), getattr(splits, key))
    assert again.class_names == splits.class_names


@pytest.mark.parametrize("kwargs,message", [
    ({"dim": 0}, "dim"), ({"dim": 2.0}, "dim"), ({"test_fraction": 1.0}, "test_fraction"),
    ({"test_fraction": 0}, "test_fraction"), ({"seed": -1}, "seed"), ({"seed": True}, "seed"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_wordnet(cache_dir=tmp_path, **kwargs)
