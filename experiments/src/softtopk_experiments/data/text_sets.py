"""Labelled text tables shipped with the package, and their TF-IDF + truncated-SVD features: the
shared reading, splitting and featurising steps of the WordNet, word-language and GCIDE sets."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from softtopk_experiments.data.cache import cached
from softtopk_experiments.data.splits import DataError, Splits


def read_packaged(file_name: str, build_script: str) -> bytes:
    """The bytes of `softtopk/experiments/data/<file_name>`; DataError naming `build_script` if missing."""
    try:
        return resources.files("softtopk_experiments.data").joinpath("shipped", file_name).read_bytes()
    except OSError:
        raise DataError(f"the data file {file_name} is missing from the softtopk-experiments package "
                        f"(rebuild it with {build_script})") from None


def read_table(data: bytes, file_name: str) -> tuple[list[str], list[str]]:
    """(labels, texts) from the gzipped `label<TAB>text` table with a header line."""
    try:
        lines = gzip.decompress(data).decode("utf-8").splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{file_name} is not a gzipped UTF-8 table: {e}") from None
    if not lines or lines[0] != "label\ttext":
        raise DataError(f"{file_name} must start with the header 'label<TAB>text'")
    rows = [line.split("\t") for line in lines[1:]]
    bad = next((i for i, row in enumerate(rows) if len(row) != 2 or not all(row)), None)
    if bad is not None:
        raise DataError(f"{file_name} line {bad + 2} is not 'label<TAB>text'")
    if not rows:
        raise DataError(f"{file_name} has no rows")
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


def check_split_args(test_fraction: float, seed: int) -> None:
    """ValueError naming `test_fraction` (a number in (0, 1)) or `seed` (an int in [0, 2**32))."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")


def load_tfidf_set(name: str, file_name: str, build_script: str, format_version: int,
                   read: Callable[[bytes], tuple[list[str], list[str]]], cache_dir: Path | None, dim: int,
                   test_fraction: float, seed: int) -> Splits:
    """`load_text_set` of a `label<TAB>text` table that `read(data) -> (labels, texts)` reads, as
    word TF-IDF + truncated-SVD features (`tfidf_svd_splits`)."""
    return load_text_set(name, file_name, build_script, format_version,
                         lambda data, *args: tfidf_svd_splits(*read(data), *args),  # late-bound
                         cache_dir, dim, test_fraction, seed)


def load_text_set(name: str, file_name: str, build_script: str, format_version: int,
                  build: Callable[[bytes, int, float, int], Splits], cache_dir: Path | None,
                  dim: int, test_fraction: float, seed: int) -> Splits:
    """Check the arguments, read the packaged table and return `build(data, dim, test_fraction, seed)`,
    cached under `cache_dir` by `name`, the arguments, `format_version` and the table's hash."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an int >= 1, got {dim!r}")
    check_split_args(test_fraction, seed)
    data = read_packaged(file_name, build_script)
    params = {"format": format_version, "data_sha256": hashlib.sha256(data).hexdigest(), "dim": dim,
              "test_fraction": float(test_fraction), "seed": seed}
    return cached(name, params, lambda: build(data, dim, float(test_fraction), seed), cache_dir)


def tfidf_svd_splits(labels: list[str], texts: list[str], dim: int, test_fraction: float, seed: int,
                     **vectorizer_options) -> Splits:
    """Stratified split of the texts; TF-IDF (sublinear tf, terms in >= 2 training texts, plus
    `vectorizer_options` for sklearn's TfidfVectorizer) and a truncated SVD to `dim`, both fitted on
    the training texts; rows L2-normalised to float32 `[N, dim]`. Classes are the sorted labels."""
    try:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
        from threadpoolctl import threadpool_limits
    except ImportError as e:
        raise ImportError("TF-IDF features need scikit-learn: pip install ./experiments") from e
    class_names = tuple(sorted(set(labels)))
    index = {name: i for i, name in enumerate(class_names)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    train, test = stratified_split(y, test_fraction, seed)
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2, dtype=np.float32, **vectorizer_options)
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
