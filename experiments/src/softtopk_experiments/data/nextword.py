"""GCIDE next word: predict a word from the words before it in the sentences of the GNU Collaborative
International Dictionary of English (definitions and quotations), over its 20,000 most frequent
words: 20,000 classes, as a suggestion bar shows the top 3 or 5. Built by
experiments/scripts/build_nextword.py; licence (GPL-2+) in NEXTWORD_LICENSE.txt beside the data.

The shipped file holds 364,748 distinct sentences (3.35 million words, 5.1% of them outside the
vocabulary, whose rarest word occurs 9 times) as word ids. The sentences are split between train
and test. An example is a position in a sentence that has at least one word before it and whose word
is in the vocabulary (positions of other words are dropped); its input is the `context` words before
it, the sentence start standing for missing ones and one unknown-word token for those outside the
vocabulary. Each word keeps at most `train_per_class` training and `test_per_class` test examples,
drawn at random: the frequent words are capped, so the classes are far less skewed than in running
text, and all but 2 of the 20,000 words have training examples (11,339 have the full 16).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import torch

from softtopk_experiments.data.cache import cached
from softtopk_experiments.data.splits import DataError, Splits
from softtopk_experiments.data.text_sets import check_split_args, read_packaged

DATA_FILE = "nextword_gcide.npz"
START, UNKNOWN, FIRST_WORD = 0, 1, 2  # the ids of the token stream (see build_nextword.py)
WINDOW = 2  # co-occurrence window of the word vectors, words on either side
_FORMAT = 1  # bump when the features change, so old cache files are not reused


def read_tokens(data: bytes) -> tuple[np.ndarray, tuple[str, ...]]:
    """(token stream uint16 `[T]`, words `[V]`) from the shipped archive; DataError if malformed."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            tokens, words = archive["tokens"], archive["words"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{DATA_FILE} is not an .npz archive with tokens and words: {e}") from None
    if tokens.dtype != np.uint16 or tokens.ndim != 1 or words.dtype.kind != "U" or words.ndim != 1:
        raise DataError(f"{DATA_FILE} must hold tokens uint16 [T] and words, strings [V]")
    if len(tokens) == 0 or tokens[0] != START or int(tokens.max()) >= FIRST_WORD + len(words) \
            or len(set(words.tolist())) != len(words):
        raise DataError(f"{DATA_FILE}: tokens must open with the sentence start {START} and index "
                        f"{len(words)} distinct words (rebuild it with "
                        "experiments/scripts/build_nextword.py)")
    return tokens, tuple(words.tolist())


def load_nextword(cache_dir: Path | None = None, dim: int = 64, context: int = 3,
                  train_per_class: int = 16, test_per_class: int = 4, test_fraction: float = 0.2,
                  seed: int = 0) -> Splits:
    """The shipped next-word set as float32 features `[N, context * dim]` (L2-normalised rows) and
    int64 labels `[N]`, the word's rank in `class_names` (most frequent first); 20,000 classes.

    `test_fraction` of the sentences, drawn with `seed`, are test sentences. Features: each context
    word's vector, oldest first, concatenated; the vectors are a truncated SVD to `dim` (U sqrt(S),
    rows L2-normalised) of the positive PMI matrix of word pairs at most `WINDOW` apart in the
    training sentences (context counts smoothed to the power .75); a word absent from them takes the
    unknown word's vector. At the defaults: 266,396 training and 63,984 test examples, 192-d.
    Cached under `cache_dir` (default `$SOFTTOPK_CACHE` or `~/.cache/softtopk`), keyed by the
    arguments and the data file's hash; the first build takes about 20 s. Needs scikit-learn
    (`pip install softtopk[experiments]`).
    """
    for name, value in (("dim", dim), ("context", context), ("train_per_class", train_per_class),
                        ("test_per_class", test_per_class)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    check_split_args(test_fraction, seed)
    data = read_packaged(DATA_FILE, "experiments/scripts/build_nextword.py")
    params = {"format": _FORMAT, "data_sha256": hashlib.sha256(data).hexdigest(), "dim": dim,
              "context": context, "train_per_class": train_per_class, "test_per_class": test_per_class,
              "test_fraction": float(test_fraction), "seed": seed}
    return cached("nextword", params, lambda: _build(data, dim, context, (train_per_class, test_per_class),
                                                     float(test_fraction), seed), cache_dir)


def _build(data: bytes, dim: int, context: int, per_class: tuple[int, int], test_fraction: float,
           seed: int) -> Splits:
    tokens, words = read_tokens(data)
    is_start = tokens == START
    sentence = np.cumsum(is_start) - 1  # [T], the sentence of each token
    starts = np.flatnonzero(is_start)
    rng = np.random.default_rng(seed)
    test_sentence = np.zeros(len(starts), dtype=bool)
    test_sentence[rng.permutation(len(starts))[:round(test_fraction * len(starts))]] = True
    in_test = test_sentence[sentence]
    vectors = word_vectors(tokens[~in_test], FIRST_WORD + len(words), dim, seed)
    offset = np.arange(len(tokens)) - starts[sentence]  # 1 for a sentence's first word
    candidates = (tokens >= FIRST_WORD) & (offset >= 2)
    parts = []
    for side, cap in ((False, per_class[0]), (True, per_class[1])):
        positions = capped(np.flatnonzero(candidates & (in_test == side)), tokens, cap, rng)
        x = context_features(tokens, offset, positions, vectors, context)
        y = torch.from_numpy(tokens[positions].astype(np.int64) - FIRST_WORD)
        parts += [torch.from_numpy(x), y]
    return Splits(*parts, len(words), words)


def capped(positions: np.ndarray, tokens: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """At most `cap` of `positions [N]` per word `tokens[position]`, drawn at random, in random order."""
    shuffled = positions[rng.permutation(len(positions))]
    by_word = shuffled[np.argsort(tokens[shuffled], kind="stable")]
    word = tokens[by_word]
    first = np.searchsorted(word, word)  # where each word's run starts in the sorted order
    kept = by_word[np.arange(len(by_word)) - first < cap]
    return kept[rng.permutation(len(kept))]


def context_features(tokens: np.ndarray, offset: np.ndarray, positions: np.ndarray, vectors: np.ndarray,
                     context: int) -> np.ndarray:
    """float32 `[N, context * dim]`: the vectors of the `context` tokens before each position, oldest
    first (the sentence start before a sentence's first word), concatenated and L2-normalised."""
    before = np.stack([np.where(offset[positions] > j, tokens[positions - j], START)
                       for j in range(context, 0, -1)], axis=1)
    x = vectors[before].reshape(len(positions), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def word_vectors(stream: np.ndarray, num_ids: int, dim: int, seed: int) -> np.ndarray:
    """float32 `[num_ids, dim]`, L2-normalised rows: the truncated SVD (U sqrt(S)) of the positive PMI
    matrix of the ids at most `WINDOW` apart within a sentence of `stream [T]` (the sentence start
    counts as a word before the first), with context counts smoothed to the power .75. An id absent
    from `stream` takes the vector of UNKNOWN."""
    try:
        from scipy import sparse
        from sklearn.utils.extmath import randomized_svd
        from threadpoolctl import threadpool_limits
    except ImportError as e:
        raise ImportError("next-word features need scikit-learn: pip install 'softtopk[experiments]'") from e
    if dim >= num_ids:
        raise ValueError(f"dim must be < the number of word ids {num_ids}, got {dim}")
    sentence = np.cumsum(stream == START)
    keys = []  # (left id, right id) of each pair as one int64
    for distance in range(1, WINDOW + 1):
        left = np.flatnonzero(sentence[distance:] == sentence[:-distance])
        keys.append(stream[left].astype(np.int64) * num_ids + stream[left + distance])
    key, count = np.unique(np.concatenate(keys), return_counts=True)
    one_way = sparse.csr_matrix((count.astype(np.float64), (key // num_ids, key % num_ids)),
                                shape=(num_ids, num_ids))
    counts = (one_way + one_way.T).tocsr()  # symmetric: each pair counts for both of its words
    word_count = np.asarray(counts.sum(axis=1)).ravel()
    smoothed = word_count**0.75
    row_of = np.repeat(np.arange(num_ids), np.diff(counts.indptr))
    pmi = np.log(counts.data * smoothed.sum() / (word_count[row_of] * smoothed[counts.indices]))
    ppmi = sparse.csr_matrix((np.maximum(pmi, 0), counts.indices, counts.indptr), shape=counts.shape)
    ppmi.eliminate_zeros()
    with threadpool_limits(limits=1, user_api="blas"):
        u, s, _ = randomized_svd(ppmi, dim, random_state=seed)
    vectors = u * np.sqrt(s)
    vectors[word_count == 0] = 0  # rather than the SVD's rounding noise
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    vectors[word_count == 0] = vectors[UNKNOWN]
    return vectors.astype(np.float32)
