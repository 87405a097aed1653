"""Build the shipped GCIDE subject-field set from Debian's `dict-gcide` (GNU Collaborative
International Dictionary of English: Webster's 1913 with later additions).

Usage::

    python experiments/scripts/build_gcide.py [PACKAGE_ROOT]

PACKAGE_ROOT is a folder into which the package was extracted (`apt-get download dict-gcide`, then
`dpkg -x dict-gcide_*.deb PACKAGE_ROOT`); it must hold `usr/share/dictd/gcide.dict.dz` and
`usr/share/doc/dict-gcide/copyright`. Without it the script runs those two commands itself in a
temporary folder (needs apt and the Debian package index).

Many senses in the dictionary open with a subject-field label: "1. (Zool.) A quadruped of the genus
Canis, ...". Every such sense becomes one text, "headword: definition" (markup, pronunciations,
etymologies and source notes removed, accent codes such as `["o]` turned into the bare letter), with
its field as the label. Spelling variants of one field are merged (`FIELD_ALIASES`); fields joined
with "&" and fields with fewer than `MIN_MEMBERS` senses are dropped, and each field keeps at most
`MAX_MEMBERS` senses, drawn at random with a fixed seed. Writes, byte-identically on every run:

- `softtopk_experiments/data/shipped/gcide_fields.tsv.gz`: header `label<TAB>text`, then one row per
  sense, sorted by label and text; gzip with mtime 0.
- `softtopk_experiments/data/shipped/GCIDE_LICENSE.txt`: the package, its version and its Debian
  copyright file (GPL-2+).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import io
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _shipping import SHIPPED, write_files

MIN_MEMBERS = 40
MAX_MEMBERS = 500
MIN_WORDS = 3
OUT_DIR = SHIPPED

FIELD_ALIASES = {
    "Zool": "Zool.", "Med": "Med.", "Music": "Mus.", "Mining.": "Mining", "Printing": "Print.",
    "Optics": "Opt.", "Painting": "Paint.", "Phonetics": "Phon.", "R.C.Ch.": "R. C. Ch.",
    "Railroads": "Railroad", "Old Eng. Law": "O. Eng. Law", "Geography": "Geog.", "Sport": "Sports",
    "Sporting": "Sports", "Law.": "Law", "Biology": "Biol.", "Grammar": "Gram.", "Engineering": "Engin.",
}
NOT_FIELDS = {"L. ad", "L. in", "Fig.", "Obs.", "Colloq."}

_ACCENT = re.compile(r"\[[\"=.^`'~,-]?([a-zA-Z])\]")  # ["o], [=e], [^a], ... -> the letter
_SENSE = re.compile(r"^(?:\d+\.|\([a-z]\))\s+\(([^()]{2,30})\)\s+(.*)$", re.S)
# after the headword line's last pronunciation `\...\` (notes removed): part of speech, plural, label
_HEAD = re.compile(r"^[^()]{0,60}?\(([^()]{2,30})\)\s+(.*)$", re.S)
# a paragraph, or a numbered or lettered sense that starts a line inside one
_CHUNK = re.compile(r"\n\s*\n|\n\s+(?=(?:\d+\.|\([a-z]\))\s)")
_MARKER = re.compile(r"^(?:\d+\.|\([a-z]\))\s+")


def clean(text: str) -> str:
    """Plain text from GCIDE's dictd markup: accent codes to letters; `[...]` notes (nested too),
    braces and backslashes removed."""
    text = re.sub(r"\[(ae|oe|AE|OE)\]", r"\1", text)
    text = _ACCENT.sub(r"\1", text)
    while (plain := re.sub(r"\[[^\[\]]*\]", " ", text)) != text:  # innermost notes first
        text = plain
    return " ".join(re.sub(r"[][{}\\]", "", text).split())


def labelled_senses(dictionary: str) -> list[tuple[str, str]]:
    """(field, "headword: definition") for every sense that opens with a field label, in file order.

    An entry starts at an unindented line; its first paragraph is the headword line (which may hold
    a single sense after the part of speech); numbered or lettered senses start later paragraphs or
    lines."""
    senses = []
    for entry in re.split(r"\n(?=\S)", dictionary):
        chunks = _CHUNK.split(entry)
        headword = clean(chunks[0].split(" \\", 1)[0])
        head_rest = chunks[0][chunks[0].rfind("\\") + 1:]
        matches = [_HEAD.match(clean(head_rest))] + [_SENSE.match(clean(chunk)) for chunk in chunks[1:]]
        for match in filter(None, matches):
            field, definition = match.group(1), _MARKER.sub("", match.group(2))
            field = FIELD_ALIASES.get(field, field)
            if (field in NOT_FIELDS or "&" in field or "," in field or not headword
                    or len(definition.split()) < MIN_WORDS):
                continue
            text = f"{headword}: {definition}"
            if "\t" in text or "\n" in text:
                raise ValueError(f"{headword!r} has a tab or newline in its text")
            senses.append((field, text))
    return senses


def select(senses: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Distinct (field, text) rows of the fields with >= MIN_MEMBERS senses, at most MAX_MEMBERS each."""
    by_field = collections.defaultdict(set)
    for field, text in senses:
        by_field[field].add(text)
    rows = []
    for field in sorted(by_field):
        texts = sorted(by_field[field])
        if len(texts) >= MIN_MEMBERS:
            if len(texts) > MAX_MEMBERS:
                texts = sorted(random.Random(f"gcide-{field}").sample(texts, MAX_MEMBERS))
            rows += [(field, text) for text in texts]
    return rows


def licence_text(copyright_file: Path, version: str) -> str:
    header = ("The file gcide_fields.tsv.gz is derived from the GNU Collaborative International\n"
              f"Dictionary of English as packaged by Debian in dict-gcide {version}.\n"
              "Its Debian copyright file follows.\n\n")
    return header + copyright_file.read_text(encoding="utf-8")


def write_outputs(root: Path, version: str) -> None:
    raw = gzip.decompress((root / "usr/share/dictd/gcide.dict.dz").read_bytes())
    rows = select(labelled_senses(raw.decode("utf-8", errors="replace")))
    table = "label\ttext\n" + "".join(f"{label}\t{text}\n" for label, text in rows)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buffer, mtime=0) as gz:
        gz.write(table.encode("utf-8"))
    licence = licence_text(root / "usr/share/doc/dict-gcide/copyright", version)
    write_files(OUT_DIR, {"gcide_fields.tsv.gz": buffer.getvalue(),
                          "GCIDE_LICENSE.txt": licence.encode("utf-8")})
    print(f"{len(rows)} senses in {len({label for label, _ in rows})} fields -> {OUT_DIR}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package_root", nargs="?", type=Path,
                        help="folder holding the extracted dict-gcide package (default: fetch it)")
    parser.add_argument("--version", default="0.48.5+nmu2",
                        help="the package version, for the licence file when PACKAGE_ROOT is given")
    args = parser.parse_args(argv)
    if args.package_root is not None:
        write_outputs(args.package_root, args.version)
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "dict-gcide"], cwd=tmp, check=True)
        (deb,) = glob.glob(os.path.join(tmp, "dict-gcide_*.deb"))
        version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], check=True, capture_output=True,
                                 text=True).stdout.strip()
        subprocess.run(["dpkg", "-x", deb, os.path.join(tmp, "root")], check=True)
        write_outputs(Path(tmp) / "root", version)


if __name__ == "__main__":
    sys.exit(main())
