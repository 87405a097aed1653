"""Build the shipped next-word set: the sentences of Debian's `dict-gcide` (GNU Collaborative
International Dictionary of English) as a stream of word ids over its `VOCABULARY` most frequent words.

Usage::

    python experiments/scripts/build_nextword.py [DOWNLOAD_DIR]

DOWNLOAD_DIR is a folder holding the package's `.deb` file (`apt-get download dict-gcide`); without it
the script downloads it itself into a temporary folder (needs apt and the Debian package index).

Every paragraph of every entry (the headword line from after its pronunciation `\\...\\`) is cleaned
as for the GCIDE field set (`build_gcide.clean`: markup, etymologies and `[...]` notes removed),
after dropping quotation sources (`--Shak.` to the line's end), parenthesised labels such as
`(Zool.)` and sense letters such as `(a)`. It is cut into sentences after `.`, `;`, `:`, `?` or `!`
and a space; a sentence is its lower-case words (letters a-z with inner apostrophes: `one's`), and
is kept if it has at least `MIN_WORDS` words and has not been seen before. The vocabulary is the
`VOCABULARY` most frequent words of the kept sentences (ties in alphabetical order). Writes,
byte-identically on every run:

- `softtopk_experiments/data/shipped/nextword_gcide.npz` (deflated, fixed zip timestamps): `tokens`
  uint16 `[T]`, the sentences in dictionary order, each opened by `START`; a word is `FIRST_WORD +`
  its rank in `words`, or `UNKNOWN` outside the vocabulary; `words` `[VOCABULARY]` (strings, most
  frequent first).
- `softtopk_experiments/data/shipped/NEXTWORD_LICENSE.txt`: the package, its version and its Debian
  copyright file (GPL-2+).
"""

from __future__ import annotations

import collections
import gzip
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _shipping import SHIPPED, main_on_debs, write_files
from build_gcide import clean
from build_radicals import archive

PACKAGE = "dict-gcide"
VOCABULARY = 20_000
MIN_WORDS = 3
START, UNKNOWN, FIRST_WORD = 0, 1, 2
DATA_FILE = "nextword_gcide.npz"
OUT_DIR = SHIPPED

_SOURCE = re.compile(r"--[A-Z][^\n]*")  # a quotation's source, "--Shak." or "--Jer. Taylor."
_LABEL = re.compile(r"\([A-Z][^()\n]{0,30}\)|\([a-z]\)")  # "(Zool.)", "(Law)", "(a)"
_SENTENCE_END = re.compile(r"(?<=[.;:?!])\s+")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def sentences(dictionary: str) -> list[tuple[str, ...]]:
    """The distinct sentences of the dictionary's entries as tuples of lower-case words, in file order."""
    found: dict[tuple[str, ...], None] = {}
    for entry in re.split(r"\n(?=\S)", dictionary):
        for i, paragraph in enumerate(re.split(r"\n\s*\n", entry)):
            if i == 0:
                paragraph = paragraph[paragraph.rfind("\\") + 1:]  # after the headword's pronunciation
            text = clean(_LABEL.sub(" ", _SOURCE.sub(" ", paragraph)))
            for sentence in _SENTENCE_END.split(text):
                words = tuple(_WORD.findall(sentence.lower()))
                if len(words) >= MIN_WORDS:
                    found[words] = None
    return list(found)


def vocabulary(corpus: list[tuple[str, ...]], size: int) -> list[str]:
    """The `size` most frequent words of `corpus`, most frequent first, ties in alphabetical order."""
    counts = collections.Counter(word for sentence in corpus for word in sentence)
    if len(counts) < size:
        raise ValueError(f"the corpus has {len(counts)} distinct words, fewer than the vocabulary {size}")
    return sorted(counts, key=lambda word: (-counts[word], word))[:size]


def encode(corpus: list[tuple[str, ...]], words: list[str]) -> np.ndarray:
    """The token stream uint16 `[T]`: each sentence as START, then its words' ids (UNKNOWN for a word
    outside `words`)."""
    if FIRST_WORD + len(words) > 2**16:
        raise ValueError(f"{len(words)} words do not fit uint16 ids")
    ids = {word: FIRST_WORD + rank for rank, word in enumerate(words)}
    stream = []
    for sentence in corpus:
        stream.append(START)
        stream += [ids.get(word, UNKNOWN) for word in sentence]
    return np.array(stream, dtype=np.uint16)


def shipped_files(dictionary: str, licence: str, size: int = VOCABULARY) -> dict[str, bytes]:
    """The files to ship (name -> bytes) from the dictionary's text and its licence text."""
    corpus = sentences(dictionary)
    words = vocabulary(corpus, size)
    arrays = {"tokens": encode(corpus, words), "words": np.array(words)}
    return {DATA_FILE: archive(arrays), "NEXTWORD_LICENSE.txt": licence.encode("utf-8")}


def write_outputs(download_dir: Path) -> None:
    (deb,) = sorted(download_dir.glob(f"{PACKAGE}_*.deb"))
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True,
                             text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg", "-x", str(deb), tmp], check=True)
        dictionary = gzip.decompress((Path(tmp) / "usr/share/dictd/gcide.dict.dz").read_bytes())
        copyright_text = (Path(tmp) / "usr/share/doc" / PACKAGE / "copyright").read_text(encoding="utf-8")
    licence = (f"The file {DATA_FILE} is derived from the GNU Collaborative International Dictionary of\n"
               f"English as packaged by Debian in {PACKAGE} {version}.\n"
               "Its Debian copyright file follows.\n\n" + copyright_text)
    files = shipped_files(dictionary.decode("utf-8", errors="replace"), licence)
    write_files(OUT_DIR, files)
    print(f"{len(files[DATA_FILE])} bytes, vocabulary {VOCABULARY} -> {OUT_DIR}")


def main(argv: list[str] | None = None) -> None:
    main_on_debs(__doc__.splitlines()[0], [PACKAGE], write_outputs, argv)


if __name__ == "__main__":
    sys.exit(main())
