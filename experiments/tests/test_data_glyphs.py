"""Rendered glyph images."""

from __future__ import annotations

import unicodedata

import pytest
import torch

pytest.importorskip("PIL")
pytest.importorskip("matplotlib")

from softtopk_experiments.data import glyphs  # noqa: E402
from softtopk_experiments.data.glyphs import CHARS, TEST_FONTS, TRAIN_FONTS, load_glyphs  # noqa: E402

SMALL = {"train_per_class": 2, "test_per_class": 1, "size": 16}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return load_glyphs(**SMALL, seed=0, cache_dir=tmp_path_factory.mktemp("glyphs"))


def test_classes_include_cross_script_look_alikes():
    assert len(CHARS) == len(set(CHARS)) >= 100
    for look_alikes in ["O0ОΟ", "l1IІ", "BВΒ", "pрρ", "xхχ", "HНΗ", "ΡPР", "SЅ"]:
        assert set(look_alikes) <= set(CHARS)
    scripts = {unicodedata.name(c).split()[0] for c in CHARS}
    assert scripts == {"DIGIT", "LATIN", "GREEK", "CYRILLIC"}
    assert not set(TRAIN_FONTS) & set(TEST_FONTS)


def test_shapes_labels_and_names(small):
    n = len(CHARS)
    assert small.train_x.shape == (2 * n, 1, 16, 16) and small.test_x.shape == (n, 1, 16, 16)
    assert small.train_x.dtype == small.test_x.dtype == torch.uint8
    assert small.train_y.dtype == torch.int64 and small.num_classes == n
    assert torch.bincount(small.train_y, minlength=n).tolist() == [2] * n
    assert torch.bincount(small.test_y, minlength=n).tolist() == [1] * n
    assert small.train_y[:n].unique().numel() > n // 2  # shuffled, not grouped by class
    assert small.class_names[CHARS.index("О")] == "О CYRILLIC CAPITAL LETTER O"
    # every image shows a bright glyph on a dark background
    for x in (small.train_x, small.test_x):
        flat = x.flatten(1).float()
        assert (flat.amax(1) > 80).all() and (flat.median(1).values < 40).all()


def test_deterministic_cached_and_seeded(small, tmp_path, monkeypatch):
    fresh = load_glyphs(**SMALL, seed=0, cache_dir=tmp_path)
    other = load_glyphs(**SMALL, seed=1, cache_dir=tmp_path)
    monkeypatch.setattr(glyphs, "_build", lambda *args: pytest.fail("cache miss"))
    cached = load_glyphs(**SMALL, seed=0, cache_dir=tmp_path)
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(fresh, key), getattr(small, key))
        assert torch.equal(getattr(cached, key), getattr(small, key))
    assert not torch.equal(other.train_x, small.train_x)


def test_train_and_test_differ(small, monkeypatch):
    train = small.train_x.flatten(1).float()
    assert torch.cdist(small.test_x.flatten(1).float(), train).min() > 0
    # test images are drawn from the held-out fonts only, and all of them are used
    fonts = []
    master = glyphs._master
    monkeypatch.setattr(glyphs, "_master", lambda font, *args: fonts.append(font) or master(font, *args))
    glyphs._build(2, 1, 16, 0)
    n = len(CHARS)  # two masters per class for training (two distinct fonts), then one for test
    assert len(fonts) == 3 * n
    assert set(fonts[:2 * n]) <= set(TRAIN_FONTS) and set(fonts[2 * n:]) == set(TEST_FONTS)


@pytest.mark.parametrize("name,value", [("train_per_class", 0), ("test_per_class", 1.5), ("size", 4),
                                        ("seed", -1), ("size", True)])
def test_bad_arguments(tmp_path, name, value):
    with pytest.raises(ValueError, match=name):
        load_glyphs(cache_dir=tmp_path, **{name: value})
