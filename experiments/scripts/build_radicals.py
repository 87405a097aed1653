"""Build the shipped CJK radical set: images of Chinese characters, rendered from three Debian fonts,
labelled with their Kangxi radical from the Unicode Han database.

Usage::

    python experiments/scripts/build_radicals.py [DOWNLOAD_DIR]

DOWNLOAD_DIR is a folder holding the `.deb` files of `PACKAGES` (`apt-get download ...`); without it
the script downloads them itself into a temporary folder (needs apt and the Debian package index).
Needs Pillow (`pip install ./experiments`).

The characters are the CJK Unified Ideographs block (U+4E00-U+9FFF); each one's radical is the
first value of its `kRSUnicode` field (Unihan_IRGSources.txt), a simplified-form mark ignored.
Radicals with fewer than `MIN_MEMBERS` characters in the block are dropped, and each radical keeps
at most `MAX_MEMBERS` characters, drawn at random with a fixed seed. Every character is drawn
white on black in each font of `FONTS` at `FONT_SIZE` px, centred on a `SIZE` x `SIZE` canvas; a
font lacking the character (it would draw its .notdef box) is skipped for it. Pixels are stored
with 16 grey levels (value // 17, two pixels a byte). Writes, byte-identically on every run:

- `softtopk_experiments/data/shipped/radicals.npz` (compressed, fixed zip timestamps): `pixels` uint8
  `[M, SIZE, SIZE // 2]` (high nibble first), `char_index` int32 `[M]` (row of `codepoints`),
  `font_index` int8 `[M]`, `codepoints` int32 `[K]`, `radicals` int16 `[K]` (Kangxi numbers
  1-214) and `fonts` `[3]` (their names).
- `softtopk_experiments/data/shipped/RADICALS_LICENSE.txt`: the packages, their versions, and their
  Debian copyright files (Unicode data licence; Apache-2.0 or GPL-3+ with font exception; Arphic
  Public License).
"""

from __future__ import annotations

import bz2
import collections
import io
import random
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from _shipping import SHIPPED, main_on_debs, write_files

MIN_MEMBERS = 25
MAX_MEMBERS = 120
SIZE, FONT_SIZE = 32, 30
BLOCK = range(0x4E00, 0xA000)
OUT_DIR = SHIPPED
UNIHAN = "usr/share/unicode/Unihan_IRGSources.txt.bz2"
# name -> (package, font file)
FONTS = {
    "WenQuanYi Micro Hei": ("fonts-wqy-microhei", "usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    "AR PL UMing": ("fonts-arphic-uming", "usr/share/fonts/truetype/arphic/uming.ttc"),
    "AR PL UKai": ("fonts-arphic-ukai", "usr/share/fonts/truetype/arphic/ukai.ttc"),
}
PACKAGES = ("unicode-data", *(package for package, _ in FONTS.values()))


def radicals(unihan: Path) -> dict[int, int]:
    """Code point -> Kangxi radical number, for the characters of `BLOCK`."""
    table = {}
    with bz2.open(unihan, "rt", encoding="utf-8") as f:
        for line in f:
            if "\tkRSUnicode\t" in line:
                code, _, value = line.rstrip("\n").split("\t")
                point = int(code[2:], 16)
                if point in BLOCK:
                    table[point] = int(re.match(r"\d+", value).group())
    return table


def select(table: dict[int, int]) -> list[int]:
    """The sorted code points kept: radicals with >= MIN_MEMBERS characters, <= MAX_MEMBERS each."""
    members = collections.defaultdict(list)
    for point in sorted(table):
        members[table[point]].append(point)
    kept = []
    for radical, points in members.items():
        if len(points) >= MIN_MEMBERS:
            kept += random.Random(f"radicals-{radical}").sample(points, min(len(points), MAX_MEMBERS))
    return sorted(kept)


def render(font_file: Path, points: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Images `[K, SIZE, SIZE]` uint8 of the characters in one font, and which of them it has."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_file), FONT_SIZE)

    def draw(char: str) -> np.ndarray:
        image = Image.new("L", (SIZE, SIZE), 0)
        ImageDraw.Draw(image).text((SIZE / 2, SIZE / 2), char, fill=255, font=font, anchor="mm")
        return np.asarray(image)

    missing = draw("\U0010fffd")  # a noncharacter: every font draws its .notdef glyph
    images = np.stack([draw(chr(point)) for point in points])
    present = (images != missing).any(axis=(1, 2)) & (images > 0).any(axis=(1, 2))
    return images, present


def archive(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive (deflated) with fixed timestamps, so equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.save(member, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, member.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return buffer.getvalue()


def write_outputs(download_dir: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        roots, versions = {}, {}
        for package in PACKAGES:
            (deb,) = sorted(download_dir.glob(f"{package}_*.deb"))
            roots[package] = Path(tmp) / package
            subprocess.run(["dpkg", "-x", str(deb), str(roots[package])], check=True)
            versions[package] = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True,
                                               capture_output=True, text=True).stdout.strip()
        table = radicals(roots["unicode-data"] / UNIHAN)
        points = select(table)
        pixels, char_index, font_index = [], [], []
        for f, (package, font_file) in enumerate(FONTS.values()):
            images, present = render(roots[package] / font_file, points)
            pixels.append(images[present])
            char_index.append(np.flatnonzero(present))
            font_index.append(np.full(int(present.sum()), f))
            print(f"{list(FONTS)[f]}: {int(present.sum())} of {len(points)} characters")
        levels = np.concatenate(pixels) // 17  # 0..15
        arrays = {"pixels": (levels[..., ::2] << 4 | levels[..., 1::2]).astype(np.uint8),
                  "char_index": np.concatenate(char_index).astype(np.int32),
                  "font_index": np.concatenate(font_index).astype(np.int8),
                  "codepoints": np.array(points, dtype=np.int32),
                  "radicals": np.array([table[p] for p in points], dtype=np.int16),
                  "fonts": np.array(list(FONTS))}
        licence = ("The file radicals.npz holds images of CJK characters rendered from the fonts below,\n"
                   "labelled with radicals from the Unicode Han database (Unihan), as packaged by Debian:\n\n"
                   + "".join(f"  {package} {versions[package]}\n" for package in PACKAGES)
                   + "\nThe packages' Debian copyright files follow.\n")
        for package in PACKAGES:
            text = (roots[package] / "usr/share/doc" / package / "copyright").read_text(encoding="utf-8")
            licence += f"\n{'=' * 78}\n{package} {versions[package]}\n{'=' * 78}\n\n{text}"
    write_files(OUT_DIR, {"radicals.npz": archive(arrays), "RADICALS_LICENSE.txt": licence.encode("utf-8")})
    print(f"{len(arrays['pixels'])} images of {len(points)} characters, "
          f"{len(set(arrays['radicals'].tolist()))} radicals -> {OUT_DIR}")


def main(argv: list[str] | None = None) -> None:
    main_on_debs(__doc__.splitlines()[0], PACKAGES, write_outputs, argv)


if __name__ == "__main__":
    sys.exit(main())
