"""WordNet noun classification: 65,647 noun synsets' "lemmas: gloss" texts in 148 classes (their
hypernym ancestor at depth 5), as TF-IDF + truncated-SVD features. Built by
experiments/scripts/build_wordnet.py."""

from __future__ import annotations

from pathlib import Path

from softtopk_experiments.data.splits import Splits
from softtopk_experiments.data.text_sets import load_tfidf_set, read_table, stratified_split

__all__ = ["DATA_FILE", "load_wordnet", "read_wordnet_table", "stratified_split"]

DATA_FILE = "wordnet_nouns.tsv.gz"
_FORMAT = 1  # bump when the features change, so old cache files are not reused


def read_wordnet_table(data: bytes) -> tuple[list[str], list[str]]:
    """(labels, texts) from the gzipped `label<TAB>text` table with a header line."""
    return read_table(data, DATA_FILE)


def load_wordnet(cache_dir: Path | None = None, dim: int = 256, test_fraction: float = 0.2,
                 seed: int = 0) -> Splits:
    """The shipped WordNet noun set as float32 features `[N, dim]` (L2-normalised rows) and int64
    labels `[N]`, with a stratified train/test split.

    Features: TF-IDF (sublinear tf, words in >= 2 training texts) fitted on the training texts, then
    a truncated SVD to `dim` dimensions fitted on the training set. Results are cached under
    `cache_dir` (default `$SOFTTOPK_CACHE` or `~/.cache/softtopk`), keyed by the arguments and the
    data file's hash. Needs scikit-learn (`pip install ./experiments`).
    """
    return load_tfidf_set("wordnet", DATA_FILE, "experiments/scripts/build_wordnet.py", _FORMAT,
                          read_wordnet_table, cache_dir, dim, test_fraction, seed)
