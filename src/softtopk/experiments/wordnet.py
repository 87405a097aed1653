"""WordNet noun classification: 65,647 noun synsets' "lemmas: gloss" texts in 148 classes (their
hypernym ancestor at depth 5), as TF-IDF + truncated-SVD features. Built by scripts/build_wordnet.py."""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from softtopk.experiments.data_cache import cached
from softtopk.experiments.splits import DataError, Splits

DATA_FILE = "wordnet_nouns.tsv.gz"
_FORMAT = 1  # bump when the features change, so old cache files are not reused


def read_wordnet_table(data: bytes) -> tuple[list[str], list[str]]:
    """(labels, texts) from the gzipped `label<TAB>text` table with a header line."""
    try:
        lines = gzip.decompress(data).decode("utf-8").splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{DATA_FILE} is not a gzipped UTF-8 table: {e}") from None
    if not lines or lines[0] != "label\ttext":
        raise DataError(f"{DATA_FILE} must start with the header 'label<TAB>text'")
    rows = [line.split("\t") for line in lines[1:]]
    bad = next((i for i, row in enumerate(rows) if len(row) != 2 or not all(row)), None)
    if bad is not None:
        raise DataError(f"{DATA_FILE} line {bad + 2} is not 'label<TAB>text'")
    if not rows:
        raise DataError(f"{DATA_FILE} has no rows")
    return [label for label, _ in rows], [text for _, text in rows]


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), each in random order: round(test_fraction * n_c) of each class's n_c
    items go to test, at least one and leaving at least one for train (a class of one is train only)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(int(y.max()) + 1):
        members = rng.permutation(np.flatnonzero(y == c))
        n_test = min(max(round(test_fraction * len(members)), 1), len(members) - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def load_wordnet(cache_dir: Path | None = None, dim: int = 256, test_fraction: float = 0.2,
                 seed: int = 0) -> Splits:
    """The shipped WordNet noun set as float32 features `[N, dim]` (L2-normalised rows) and int64
    labels `[N]`, with a stratified train/test split.

    Features: TF-IDF (sublinear tf, words in >= 2 training texts) fitted on the training texts, then
    a truncated SVD to `dim` dimensions fitted on the training set. Results are cached under
    `cache_dir` (default `$SOFTTOPK_CACHE` or `~/.cache/softtopk`), keyed by the arguments and the
    data file's hash. Needs scikit-learn (`pip install softtopk[experiments]`).
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an int >= 1, got {dim!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    resource = resources.files("softtopk.experiments").joinpath("data", DATA_FILE)
    try:
        data = resource.read_bytes()
    except OSError:
        raise DataError(f"the WordNet data file {DATA_FILE} is missing from the softtopk package "
                        "(rebuild it with scripts/build_wordnet.py)") from None
    params = {"format": _FORMAT, "data_sha256": hashlib.sha256(data).hexdigest(), "dim": dim,
              "test_fraction": float(test_fraction), "seed": seed}
    return cached("wordnet", params, lambda: _build(data, dim, float(test_fraction), seed), cache_dir)


def _build(data: bytes, dim: int, test_fraction: float, seed: int) -> Splits:
    try:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
        from threadpoolctl import threadpool_limits
    except ImportError as e:
        raise ImportError("load_wordnet needs scikit-learn: pip install 'softtopk[experiments]'") from e
    labels, texts = read_wordnet_table(data)
    class_names = tuple(sorted(set(labels)))
    index = {name: i for i, name in enumerate(class_names)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    train, test = stratified_split(y, test_fraction, seed)
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2, dtype=np.float32)
    train_tfidf = vectorizer.fit_transform([texts[i] for i in train])
    test_tfidf = vectorizer.transform([texts[i] for i in test])
    if dim >= train_tfidf.shape[1]:
        raise ValueError(f"dim must be < the vocabulary size {train_tfidf.shape[1]}, got {dim}")
    svd = TruncatedSVD(dim, random_state=seed)
    # One BLAS thread: the SVD's tall QR factorisations slow down many-fold with threads on busy cores.
    with threadpool_limits(limits=1, user_api="blas"):
        features = [svd.fit_transform(train_tfidf), svd.transform(test_tfidf)]
    train_x, test_x = (torch.from_numpy(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
                       .float() for x in features)
    return Splits(train_x, torch.from_numpy(y[train]), test_x, torch.from_numpy(y[test]),
                  len(class_names), class_names)
