"""CJK radicals: 23,118 images of 8,405 Chinese characters (CJK Unified Ideographs), each drawn in
up to three fonts, labelled with the character's Kangxi radical: 104 classes (the radicals with at
least 25 characters in the block, at most 120 characters each). Built by experiments/scripts/build_radicals.py
from Debian's unicode-data (Unihan) and its WenQuanYi Micro Hei, AR PL UMing and AR PL UKai fonts;
licences in RADICALS_LICENSE.txt beside the data.

The radical is a dictionary convention: a character holds several components, one of which is its
radical, and similar components (月 moon / 肉 meat, 土 earth / 士 scholar, ...) are separate radicals,
so top-1 accuracy is capped below 1 while top-5 accuracy is not. Train and test hold different
characters, every font of a character on the same side.
"""

from __future__ import annotations

import unicodedata
import zipfile
from importlib import resources

import numpy as np
import torch

from softtopk_experiments.data.splits import DataError, Splits
from softtopk_experiments.data.text_sets import check_split_args, stratified_split

DATA_FILE = "radicals.npz"
_ARRAYS = {"pixels": "u", "char_index": "i", "font_index": "i", "codepoints": "i", "radicals": "i",
           "fonts": "U"}


def radical_name(number: int) -> str:
    """`'85 ⽔ water'`: the Kangxi radical's number, its character and its Unicode name."""
    char = chr(0x2EFF + number)
    return f"{number} {char} {unicodedata.name(char).removeprefix('KANGXI RADICAL ').lower()}"


def load_radicals(test_fraction: float = 0.2, seed: int = 0) -> Splits:
    """Images `[N, 1, 32, 32]` uint8 (white on black, 16 grey levels) and int64 labels `[N]` indexing
    the sorted radicals (`class_names` such as `'85 ⽔ water'`), in random order.

    The characters are split stratified by radical, `test_fraction` of each radical's characters
    to test (drawn with `seed`); about 18,500 train and 4,600 test images at the defaults. Fast
    (under a second), so nothing is cached; needs no extra package.
    """
    check_split_args(test_fraction, seed)
    resource = resources.files("softtopk_experiments.data").joinpath("shipped", DATA_FILE)
    with resources.as_file(resource) as path:
        if not path.is_file():
            raise DataError(f"the data file {DATA_FILE} is missing from the softtopk-experiments package "
                            "(rebuild it with experiments/scripts/build_radicals.py)")
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in _ARRAYS if key in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"cannot read {path} as an .npz archive: {e}") from None
    for key, kind in _ARRAYS.items():
        if key not in arrays or arrays[key].dtype.kind != kind:
            raise DataError(f"{path} must hold the array {key} of kind {kind!r}")
    pixels, char_index, radicals = arrays["pixels"], arrays["char_index"], arrays["radicals"]
    if pixels.ndim != 3 or pixels.shape[1:] != (32, 16) or not (
            len(pixels) == len(char_index) == len(arrays["font_index"])) or len(radicals) != len(
            arrays["codepoints"]):
        raise DataError(f"{path}: pixels must be [M, 32, 16] with M char_index and font_index rows, "
                        "and radicals as long as codepoints")
    if len(char_index) == 0 or char_index.min() < 0 or char_index.max() >= len(radicals) \
            or radicals.min() < 1 or radicals.max() > 214:
        raise DataError(f"{path}: char_index must index codepoints and radicals must be in 1..214")
    numbers = np.unique(radicals)
    labels = np.searchsorted(numbers, radicals)  # per character
    train_chars, test_chars = stratified_split(labels, test_fraction, seed)
    rng = np.random.default_rng([seed, 1])
    side = np.zeros(len(radicals), dtype=bool)
    side[test_chars] = True
    images = np.stack([pixels >> 4, pixels & 15], axis=-1).reshape(len(pixels), 1, 32, 32) * 17
    parts = []
    for in_test in (False, True):
        rows = rng.permutation(np.flatnonzero(side[char_index] == in_test))
        parts += [torch.from_numpy(images[rows]), torch.from_numpy(labels[char_index[rows]].astype(np.int64))]
    return Splits(*parts, len(numbers), tuple(radical_name(int(n)) for n in numbers))
