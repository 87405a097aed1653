"""Build the shipped WordNet noun classification set from Debian's `wordnet-base` (WordNet 3.0).

Usage::

    python experiments/scripts/build_wordnet.py [DOWNLOAD_DIR]

DOWNLOAD_DIR is a folder holding the package's .deb file (`apt-get download wordnet-base`); without
it the script downloads the package into a temporary folder (needs apt and the Debian package
index). The package is extracted with `dpkg -x`.

Every noun synset becomes one text, "first up to 3 lemmas: gloss" (underscores as spaces), labelled
with its ancestor at depth 5 below the root `entity` along the first hypernym chain (the first `@`
pointer, or the first `@i` instance pointer for instances). Synsets at depth < 5 are dropped, and so
are ancestors with fewer than 50 members. Labels are named like `dog.n.01` (first lemma, sense
number from `index.noun`). Writes, byte-identically on every run:

- `softtopk_experiments/data/shipped/wordnet_nouns.tsv.gz`: header `label<TAB>text`, then one row per
  synset in synset-offset order; gzip with mtime 0.
- `softtopk_experiments/data/shipped/WORDNET_LICENSE.txt`: WordNet 3.0's licence from the copyright file.
"""

from __future__ import annotations

import collections
import gzip
import io
import subprocess
import sys
import tempfile
from pathlib import Path

from _shipping import SHIPPED, main_on_debs, write_files

DEPTH = 5
MIN_MEMBERS = 50
MAX_LEMMAS = 3
OUT_DIR = SHIPPED


def parse_synsets(data_noun: Path) -> dict[str, tuple[list[str], str | None, str]]:
    """offset -> (lemmas, first hypernym offset or None, gloss), from a WordNet `data.noun` file."""
    synsets = {}
    with open(data_noun, encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # licence header
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            n_words = int(fields[3], 16)
            lemmas = fields[4:4 + 2 * n_words:2]
            start = 5 + 2 * n_words
            pointers = [fields[i:i + 2] for i in range(start, start + 4 * int(fields[start - 1]), 4)]
            hypernyms = [o for s, o in pointers if s == "@"] or [o for s, o in pointers if s == "@i"]
            synsets[fields[0]] = (lemmas, hypernyms[0] if hypernyms else None, gloss.strip())
    return synsets


def sense_names(index_noun: Path, synsets: dict) -> dict[str, str]:
    """offset -> `lemma.n.NN`, the sense of the synset's first lemma in `index.noun`."""
    senses = {}
    with open(index_noun, encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):
                continue
            fields = line.split()
            senses[fields[0]] = fields[-int(fields[2]):]
    names = {}
    for offset, (lemmas, _, _) in synsets.items():
        lemma = lemmas[0].lower()
        names[offset] = f"{lemma}.n.{senses[lemma].index(offset) + 1:02d}"
    return names


def labelled_rows(synsets: dict, names: dict[str, str]) -> list[tuple[str, str]]:
    """(label name, text) for every synset whose depth-5 ancestor has >= MIN_MEMBERS members."""
    ancestor = {}
    for offset in synsets:
        chain = [offset]
        while (parent := synsets[chain[-1]][1]) is not None:
            chain.append(parent)
        if len(chain) > DEPTH:
            ancestor[offset] = chain[-1 - DEPTH]
    counts = collections.Counter(ancestor.values())
    rows = []
    for offset in sorted(ancestor):
        if counts[ancestor[offset]] >= MIN_MEMBERS:
            lemmas, _, gloss = synsets[offset]
            text = f"{', '.join(w.replace('_', ' ') for w in lemmas[:MAX_LEMMAS])}: {gloss}"
            if "\t" in text or "\n" in text:
                raise ValueError(f"synset {offset} has a tab or newline in its text")
            rows.append((names[ancestor[offset]], text))
    return rows


def licence_text(copyright_file: Path) -> str:
    """The `License: WordNet3.0` paragraph of a Debian copyright file, as plain text."""
    lines = copyright_file.read_text(encoding="utf-8").splitlines()
    start = lines.index("License: WordNet3.0") + 1
    body = []
    for line in lines[start:]:
        if not line.startswith(" "):
            break
        body.append("" if line == " ." else line[1:])
    header = ("The file wordnet_nouns.tsv.gz is derived from WordNet 3.0 (Princeton University),\n"
              "as packaged by Debian in wordnet-base. Its licence follows.\n\n")
    return header + "\n".join(body).rstrip() + "\n"


def write_outputs(root: Path) -> None:
    wordnet = root / "usr" / "share" / "wordnet"
    synsets = parse_synsets(wordnet / "data.noun")
    rows = labelled_rows(synsets, sense_names(wordnet / "index.noun", synsets))
    table = "label\ttext\n" + "".join(f"{label}\t{text}\n" for label, text in rows)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buffer, mtime=0) as gz:
        gz.write(table.encode("utf-8"))
    write_files(OUT_DIR, {"wordnet_nouns.tsv.gz": buffer.getvalue(),
                          "WORDNET_LICENSE.txt":
                          licence_text(root / "usr/share/doc/wordnet-base/copyright").encode("utf-8")})
    print(f"{len(rows)} texts in {len({label for label, _ in rows})} classes -> {OUT_DIR}")


def write_outputs_from_deb(download_dir: Path) -> None:
    (deb,) = sorted(download_dir.glob("wordnet-base_*.deb"))
    with tempfile.TemporaryDirectory() as root:
        subprocess.run(["dpkg", "-x", str(deb), root], check=True)
        write_outputs(Path(root))


def main(argv: list[str] | None = None) -> None:
    main_on_debs(__doc__.splitlines()[0], ["wordnet-base"], write_outputs_from_deb, argv)


if __name__ == "__main__":
    sys.exit(main())
