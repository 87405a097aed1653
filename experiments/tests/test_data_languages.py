"""The shipped word-language set and its character n-gram features."""

from __future__ import annotations

import collections
import gzip
import unicodedata
from importlib import resources

import pytest
import torch
from linear_probe import probe_accuracy

from softtopk_experiments.data import languages, text_sets
from softtopk_experiments.data.languages import (
    CLASS_NAMES,
    LANGUAGE_NAMES,
    load_languages,
    read_languages_table,
)
from softtopk_experiments.data.splits import DataError

pytest.importorskip("sklearn")

DATA = resources.files("softtopk_experiments.data").joinpath("shipped")


def test_shipped_table_has_the_documented_classes():
    labels, words = read_languages_table(DATA.joinpath(languages.DATA_FILE).read_bytes())
    counts = collections.Counter(labels)
    assert len(words) == 33_000 and tuple(sorted(counts)) == CLASS_NAMES == tuple(sorted(LANGUAGE_NAMES))
    assert set(counts.values()) == {500}
    assert len(set(zip(labels, words, strict=True))) == 33_000  # distinct within a language
    assert all(3 <= len(w) <= 24 and unicodedata.category(w[0])[0] in "LM" and " " not in w for w in words)
    by_language = collections.defaultdict(set)
    for label, word in zip(labels, words, strict=True):
        by_language[label].add(word)
    assert all("\u0400" <= w[0] <= "\u04ff" for w in by_language["ru"])  # Cyrillic
    assert all("\u0e00" <= w[0] <= "\u0e7f" for w in by_language["th"])  # Thai
    shared = collections.Counter(w for ws in by_language.values() for w in ws)
    assert 20 < sum(n > 1 for n in shared.values()) < 200  # some words are in several languages
    licence = DATA.joinpath("LANGUAGES_LICENSE.txt").read_text(encoding="utf-8")
    assert "hunspell-af 1:7.5.0-1, af_ZA.dic" in licence and "myspell-eo" in licence
    assert licence.count("copyright file ") >= 66 + 10 and "GNU" in licence


def test_load_features_split_and_cache(tmp_path, monkeypatch):
    splits = load_languages(cache_dir=tmp_path, dim=32, test_fraction=0.2, seed=0)
    assert splits.train_x.shape == (26_400, 32) and splits.test_x.shape == (6_600, 32)
    assert splits.train_x.dtype == splits.test_x.dtype == torch.float32
    assert splits.train_y.dtype == splits.test_y.dtype == torch.int64
    assert splits.num_classes == 66 and splits.class_names == CLASS_NAMES
    assert torch.bincount(splits.train_y, minlength=66).tolist() == [400] * 66
    assert torch.bincount(splits.test_y, minlength=66).tolist() == [100] * 66
    assert torch.allclose(splits.train_x.norm(dim=1), torch.tensor(1.0), atol=1e-5)
    # learnable: a three-epoch softmax probe is far above chance (1/66), and top-5 well above top-1
    top1_accuracy, top5_accuracy = probe_accuracy(splits.train_x, splits.train_y, splits.test_x,
                                                  splits.test_y, 66, epochs=3, lr=3e-2)
    assert top1_accuracy > 0.3 and top5_accuracy > top1_accuracy + 0.15

    monkeypatch.setattr(languages, "_build", lambda *args: pytest.fail("cache miss"))
    again = load_languages(cache_dir=tmp_path, dim=32, test_fraction=0.2, seed=0)
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(again, key), getattr(splits, key))


def test_build_is_deterministic_and_splits_by_seed():
    table = "label\ttext\n" + "".join(f"{code}\t{word}{i}x\n" for code, word in [("aa", "kat"), ("bb", "dog")]
                                      for i in range(20))
    rows = read_languages_table(gzip.compress(table.encode()))
    first, again, other = (text_sets.tfidf_svd_splits(*rows, 4, 0.25, seed, analyzer="char_wb",
                                                      ngram_range=(1, 4)) for seed in (0, 0, 1))
    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.test_y, again.test_y)
    assert len(first.train_x) == 30 and len(first.test_x) == 10
    assert not torch.equal(first.test_x, other.test_x)


def test_missing_and_corrupt_files(tmp_path, monkeypatch):
    monkeypatch.setattr(languages, "DATA_FILE", "no_such_file.tsv.gz")
    with pytest.raises(DataError, match="no_such_file.tsv.gz is missing.*build_languages.py"):
        load_languages(cache_dir=tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(text_sets, "read_packaged", lambda *args: b"not gzip")
    with pytest.raises(DataError, match="not a gzipped"):
        load_languages(cache_dir=tmp_path)
    monkeypatch.setattr(text_sets, "read_packaged", lambda *args: gzip.compress(b"label\ttext\nxx\tword\n"))
    with pytest.raises(DataError, match="66 languages"):
        load_languages(cache_dir=tmp_path)


@pytest.mark.parametrize("kwargs,message", [
    ({"dim": 0}, "dim"), ({"dim": 2.0}, "dim"), ({"test_fraction": 1.0}, "test_fraction"),
    ({"seed": -1}, "seed"), ({"seed": True}, "seed"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_languages(cache_dir=tmp_path, **kwargs)
