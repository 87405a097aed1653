"""Glyphs: 182 classes of digits and Latin, Greek and Cyrillic letters, rendered from the fonts that
ship with matplotlib under random affine distortion and noise.

Look-alikes from different scripts are separate classes (O/0/О/Ο, B/В/Β, p/р/ρ, I/l/1/І, ...),
and several are drawn from the same outline in a font, so top-1 accuracy is capped well below 1
while top-k accuracy is not. Test images come from fonts never used for training and from
distortions drawn with a separate random stream.
"""

from __future__ import annotations

import unicodedata
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from softtopk_experiments.data.cache import cached
from softtopk_experiments.data.splits import DataError, Splits

if TYPE_CHECKING:
    from PIL.Image import Image
    from PIL.ImageFont import FreeTypeFont

_FORMAT = 1  # bump when the rendering changes, so old cache files are not reused

CHARS: tuple[str, ...] = tuple(
    "0123456789"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩαβγδεζηθικλμνξοπρστυφχψω"
    "АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯабвгдеёжзийклмнопрстуфхцчшщъыьэюяІіЈјЅѕ"
)
"""The classes, in label order."""

TRAIN_FONTS: tuple[str, ...] = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSansMono", "DejaVuSansMono-Oblique",
    "DejaVuSansMono-BoldOblique", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-BoldItalic",
    "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "cmr10", "cmb10", "cmti10", "cmtt10", "cmmi10",
)
TEST_FONTS: tuple[str, ...] = (
    "DejaVuSans-BoldOblique", "DejaVuSansMono-Bold", "DejaVuSerif-Italic", "STIXGeneralBolIta", "cmss10",
)
"""Fonts from matplotlib's `mpl-data/fonts/ttf`; a font lacking a character is skipped for it."""


def load_glyphs(train_per_class: int = 40, test_per_class: int = 10, size: int = 32, seed: int = 0,
                cache_dir: Path | None = None) -> Splits:
    """Rendered glyph images `[N, 1, size, size]` uint8 (white on black) with int64 labels `[N]`
    indexing `CHARS`, `train_per_class` / `test_per_class` images per class, in random order.

    Each image is one font's glyph at a fixed em size and baseline (so case and descenders show),
    rotated, scaled, sheared and shifted at random, plus Gaussian noise. Deterministic in all
    arguments; cached under `cache_dir` (default `$SOFTTOPK_CACHE` or `~/.cache/softtopk`).
    Needs Pillow and matplotlib (`pip install ./experiments`).
    """
    for name, value, low in [("train_per_class", train_per_class, 1), ("test_per_class", test_per_class, 1),
                             ("size", size, 8), ("seed", seed, 0)]:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    try:
        import matplotlib
        import PIL
    except ImportError as e:
        raise ImportError("load_glyphs needs Pillow and matplotlib: "
                          "pip install ./experiments") from e
    params = {"format": _FORMAT, "train_per_class": train_per_class, "test_per_class": test_per_class,
              "size": size, "seed": seed, "matplotlib": matplotlib.__version__, "pillow": PIL.__version__}
    return cached("glyphs", params, lambda: _build(train_per_class, test_per_class, size, seed), cache_dir)


def _build(train_per_class: int, test_per_class: int, size: int, seed: int) -> Splits:
    class_names = tuple(f"{c} {unicodedata.name(c)}" for c in CHARS)
    splits = []
    parts = [(TRAIN_FONTS, train_per_class), (TEST_FONTS, test_per_class)]
    for stream, (fonts, per_class) in enumerate(parts):
        rng = np.random.default_rng([seed, stream])
        images = np.empty((len(CHARS) * per_class, 1, size, size), dtype=np.uint8)
        for label, char in enumerate(CHARS):
            covering = [font for font in fonts if char in _charset(font)]
            if not covering:
                raise DataError(f"none of the glyph fonts {', '.join(fonts)} has the character {char!r}")
            assigned = np.resize(rng.permutation(covering), per_class)
            for font in np.unique(assigned):
                master = _master(font, char, 2 * size)
                for i in np.flatnonzero(assigned == font):
                    images[label * per_class + i, 0] = _distort(master, size, rng)
        images = _add_noise(images, rng)
        order = torch.from_numpy(rng.permutation(len(images)))
        labels = torch.arange(len(CHARS)).repeat_interleave(per_class)
        splits += [torch.from_numpy(images)[order], labels[order]]
    return Splits(*splits, num_classes=len(CHARS), class_names=class_names)


@cache
def _font_path(font: str) -> Path:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{font}.ttf"
    if not path.is_file():
        raise DataError(f"the font file {path} that ships with matplotlib is missing")
    return path


@cache
def _charset(font: str) -> frozenset[str]:
    from matplotlib.ft2font import FT2Font

    return frozenset(map(chr, FT2Font(str(_font_path(font))).get_charmap()))


@cache
def _truetype(font: str, pixels: int) -> FreeTypeFont:
    from PIL import ImageFont

    return ImageFont.truetype(str(_font_path(font)), pixels)


def _master(font: str, char: str, side: int) -> Image:
    """`char` in white on a black `side x side` 'L' image: em size 0.62 side, centred horizontally,
    baseline a quarter em below the centre (so capitals and descenders both fit)."""
    from PIL import Image, ImageDraw

    em = 0.62 * side
    image = Image.new("L", (side, side), 0)
    ImageDraw.Draw(image).text((side / 2, side / 2 + em / 4), char, fill=255, anchor="ms",
                               font=_truetype(font, round(em)))
    return image


def _distort(master: Image, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random affine view `[size, size]` uint8 of the `2 size` square master: rotation +-12 deg,
    scale 0.8-1.1 (aspect +-10 %), shear +-0.25, shift +-8 % of the side; drawn at 2x, then halved."""
    from PIL import Image

    angle = np.deg2rad(rng.uniform(-12, 12))
    scale = rng.uniform(0.8, 1.1) * np.exp(rng.uniform(-0.1, 0.1) * np.array([1.0, -1.0]))
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = rotate @ np.array([[1.0, rng.uniform(-0.25, 0.25)], [0.0, 1.0]]) @ np.diag(scale)
    inverse = np.linalg.inv(forward)  # PIL maps output pixels to input pixels
    side = master.width
    centre = np.full(2, side / 2)
    offset = centre - inverse @ (centre + rng.uniform(-0.08, 0.08, 2) * side)
    coefficients = (*inverse[0], offset[0], *inverse[1], offset[1])
    view = master.transform((side, side), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)
    return np.asarray(view.reduce(side // size))


def _add_noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast scaled by 0.6-1 and Gaussian noise of standard deviation 0-20 per image, clipped."""
    shape = (len(images), 1, 1, 1)
    noisy = images * rng.uniform(0.6, 1.0, shape) + rng.normal(size=images.shape) * rng.uniform(0, 20, shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
