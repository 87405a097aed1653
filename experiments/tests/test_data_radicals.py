"""The shipped CJK radical images."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from linear_probe import probe_accuracy

from softtopk_experiments.data import radicals
from softtopk_experiments.data.radicals import load_radicals, radical_name
from softtopk_experiments.data.splits import DataError


@pytest.fixture(scope="module")
def shipped():
    return load_radicals()


def test_shapes_labels_and_classes(shipped):
    assert shipped.train_x.shape == (18_479, 1, 32, 32) and shipped.test_x.shape == (4_639, 1, 32, 32)
    assert shipped.train_x.dtype == shipped.test_x.dtype == torch.uint8
    assert shipped.train_y.dtype == shipped.test_y.dtype == torch.int64 and shipped.num_classes == 104
    for y in (shipped.train_y, shipped.test_y):
        assert torch.bincount(y, minlength=104).min() > 0 and int(y.max()) == 103
    assert shipped.class_names[:2] == ("1 ⼀ one", "4 ⼃ slash") and "85 ⽔ water" in shipped.class_names
    assert all(re.fullmatch(r"\d+ \S [a-z ]+", name) for name in shipped.class_names)
    # 16 grey levels, white glyphs on black
    assert set(torch.unique(shipped.test_x).tolist()) <= set(range(0, 256, 17))
    assert shipped.train_x.float().mean() < 60
    train_images = {bytes(x.numpy()) for x in shipped.train_x}
    # train and test hold different characters; a font may draw two code points alike
    assert sum(bytes(x.numpy()) in train_images for x in shipped.test_x) <= 5


def _pooled(images: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(images.float() / 255, 2).flatten(1)  # [N, 256]


def test_learnable_by_a_linear_probe(shipped):
    x = _pooled(shipped.train_x)
    mean, std = x.mean(0), x.std(0) + 1e-3
    test_x = (_pooled(shipped.test_x) - mean) / std
    top1_accuracy, top5_accuracy = probe_accuracy((x - mean) / std, shipped.train_y, test_x,
                                                  shipped.test_y, 104, epochs=2, lr=1e-3)
    assert top1_accuracy > 0.4 and top5_accuracy > top1_accuracy + 0.1  # chance is 1/104


def _archive(**changes) -> bytes:
    """A small archive: 12 characters of radicals 1, 2, 3 in two fonts; every image of character
    c is filled with the grey level c, so images tell their character."""
    char_index = np.tile(np.arange(12, dtype=np.int32), 2)
    levels = np.repeat(char_index.astype(np.uint8) + 1, 32 * 16).reshape(24, 32, 16)
    arrays = {"pixels": levels << 4 | levels, "char_index": char_index,
              "font_index": np.repeat(np.arange(2, dtype=np.int8), 12),
              "codepoints": np.arange(0x4E00, 0x4E0C, dtype=np.int32),
              "radicals": np.repeat(np.array([1, 2, 3], dtype=np.int16), 4), "fonts": np.array(["a", "b"])}
    arrays.update(changes)
    buffer = io.BytesIO()
    np.savez(buffer, **{key: value for key, value in arrays.items() if value is not None})
    return buffer.getvalue()


@pytest.fixture
def small(tmp_path, monkeypatch):
    """Serve `content` as the packaged radicals.npz."""
    (tmp_path / "shipped").mkdir()
    monkeypatch.setattr(radicals.resources, "files", lambda package: tmp_path)

    def serve(content: bytes | None) -> None:
        if content is not None:
            (tmp_path / "shipped" / radicals.DATA_FILE).write_bytes(content)

    return serve


def test_split_keeps_each_character_on_one_side_and_follows_the_seed(small):
    small(_archive())
    first, again, other = (load_radicals(0.25, seed=seed) for seed in (0, 0, 5))
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, key), getattr(again, key))
    assert first.class_names == ("1 ⼀ one", "2 ⼁ line", "3 ⼂ dot") and first.num_classes == 3
    train_chars = set(first.train_x[:, 0, 0, 0].tolist())
    test_chars = set(first.test_x[:, 0, 0, 0].tolist())
    assert len(train_chars) == 9 and len(test_chars) == 3 and not train_chars & test_chars
    assert len(first.train_x) == 18 and torch.bincount(first.test_y).tolist() == [2, 2, 2]  # both fonts
    assert set(other.test_x[:, 0, 0, 0].tolist()) != test_chars


@pytest.mark.parametrize("content,message", [
    (None, "missing.*build_radicals.py"),
    (b"not an archive", "cannot read"),
    (_archive(fonts=None), "fonts"),
    (_archive(pixels=np.zeros((24, 32, 32), np.uint8)), r"\[M, 32, 16\]"),
    (_archive(char_index=np.full(24, 12, np.int32)), "char_index must index"),
    (_archive(radicals=np.full(12, 215, np.int16)), "1..214"),
])
def test_bad_files(small, content, message):
    small(content)
    with pytest.raises(DataError, match=message):
        load_radicals()


@pytest.mark.parametrize("kwargs,message", [
    ({"test_fraction": 0}, "test_fraction"), ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_radicals(**kwargs)


def test_licences_are_shipped():
    licence = radicals.resources.files("softtopk_experiments.data").joinpath(
        "shipped", "RADICALS_LICENSE.txt").read_text(encoding="utf-8")
    assert "UNICODE, INC. LICENSE AGREEMENT" in licence and "ARPHIC PUBLIC LICENSE" in licence
    assert "Apache-2.0 or GPL-3+ with Font exception" in licence


def test_radical_names():
    assert radical_name(1) == "1 ⼀ one" and radical_name(214) == "214 ⿕ flute"
