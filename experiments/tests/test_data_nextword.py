"""The shipped GCIDE next-word set: its token stream, its features and its build script."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from softtopk_experiments.data import nextword, text_sets
from softtopk_experiments.data.nextword import START, UNKNOWN, load_nextword, read_tokens
from softtopk_experiments.data.splits import DataError

pytest.importorskip("sklearn")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import build_nextword  # noqa: E402

SLICE_SENTENCES = 40_000


@pytest.fixture(scope="module")
def shipped():
    return read_tokens(text_sets.read_packaged(nextword.DATA_FILE, ""))


def _archive(tokens: np.ndarray, words) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, tokens=tokens, words=np.array(words))
    return buffer.getvalue()


@pytest.fixture
def serve(monkeypatch):
    """`serve(data)`: the loader reads `data` as the packaged file."""
    def set_data(data: bytes) -> None:
        monkeypatch.setattr(nextword, "read_packaged", lambda file_name, script: data)
    return set_data


@pytest.fixture(scope="module")
def sliced(shipped, tmp_path_factory):
    """The first SLICE_SENTENCES sentences of the shipped stream with the whole vocabulary, loaded
    with 16-d word vectors; and the cache folder."""
    tokens, words = shipped
    end = np.flatnonzero(tokens == START)[SLICE_SENTENCES]
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        data = _archive(tokens[:end], words)
        patch.setattr(nextword, "read_packaged", lambda file_name, script: data)
        return load_nextword(cache_dir=cache, dim=16), data, cache


def test_shipped_stream_and_vocabulary(shipped):
    tokens, words = shipped
    assert tokens.shape == (3_711_363,) and len(words) == 20_000
    assert words[:5] == ("the", "of", "a", "to", "or") and {"king", "serf", "one's"} <= set(words)
    assert all(word.replace("'", "").isalpha() and word == word.lower() for word in words)
    starts = np.flatnonzero(tokens == START)
    assert len(starts) == 364_748 and np.diff(np.append(starts, len(tokens))).min() >= 4  # >= 3 words
    assert 0.05 < (tokens == UNKNOWN).sum() / (len(tokens) - len(starts)) < 0.055
    counts = np.bincount(tokens, minlength=len(words) + 2)[2:]
    assert (np.diff(counts) <= 0).all() and counts[-1] == 9  # most frequent first
    licence = text_sets.read_packaged("NEXTWORD_LICENSE.txt", "").decode()
    assert "dict-gcide 0.48.5+nmu2" in licence and "either version 2, or (at your option)" in licence


def test_loader_on_a_slice_splits_caps_and_caches(sliced, serve, monkeypatch):
    splits, data, cache = sliced
    assert splits.num_classes == len(splits.class_names) == 20_000 and splits.class_names[0] == "the"
    assert splits.train_x.shape[1] == splits.test_x.shape[1] == 3 * 16
    assert splits.train_x.dtype == splits.test_x.dtype == torch.float32
    assert splits.train_y.dtype == splits.test_y.dtype == torch.int64
    assert torch.allclose(splits.train_x.norm(dim=1), torch.ones(len(splits.train_x)))
    train_counts, test_counts = (torch.bincount(y, minlength=20_000) for y in (splits.train_y, splits.test_y))
    assert int(train_counts.max()) == 16 and int(test_counts.max()) == 4  # the caps, reached by "the"
    assert int(train_counts[0]) == 16 and int((train_counts > 0).sum()) > 5_000
    assert 0.15 < len(splits.test_y) / (len(splits.train_y) + len(splits.test_y)) < 0.3

    serve(data)
    monkeypatch.setattr(nextword, "_build", lambda *args: pytest.fail("cache miss"))
    again = load_nextword(cache_dir=cache, dim=16)
    assert torch.equal(again.train_x, splits.train_x) and torch.equal(again.test_y, splits.test_y)


def test_features_carry_the_context(sliced):
    """Nearest class centroid on the 200 most frequent words beats chance (1/200) many times over."""
    splits = sliced[0]
    train, test = splits.train_y < 200, splits.test_y < 200
    centroids = torch.zeros(200, splits.train_x.shape[1]).index_add_(0, splits.train_y[train],
                                                                      splits.train_x[train])
    top5 = (splits.test_x[test] @ centroids.T).topk(5, dim=1).indices
    test_y = splits.test_y[test]
    top1_accuracy, top5_accuracy = ((top5[:, :k] == test_y[:, None]).any(1).float().mean() for k in (1, 5))
    assert top1_accuracy > 0.03 and top5_accuracy > top1_accuracy + 0.05  # 0.072 and 0.17


def test_split_by_sentence_and_seed(serve, tmp_path):
    # "a b" then five words: eight sentences; every context is unique, so examples tell their sentence
    words = [f"w{i}" for i in range(60)]
    tokens = np.concatenate([[START, 2 + 7 * s, *range(3 + 7 * s, 9 + 7 * s)] for s in range(8)])
    serve(_archive(tokens.astype(np.uint16), words))
    first = load_nextword(cache_dir=tmp_path, dim=2, context=1, test_fraction=0.25, seed=3)
    again = load_nextword(cache_dir=tmp_path / "other", dim=2, context=1, test_fraction=0.25, seed=3)
    assert torch.equal(first.train_y, again.train_y) and torch.equal(first.test_x, again.test_x)
    assert len(first.train_y) == 6 * 6 and len(first.test_y) == 2 * 6  # no word reaches a cap
    train_sentences = set((first.train_y // 7).tolist())
    assert len(train_sentences) == 6 and not train_sentences & set((first.test_y // 7).tolist())


def test_context_features_pad_with_the_sentence_start():
    vectors = np.eye(5, dtype=np.float32)  # id i -> unit vector i
    tokens = np.array([START, 2, 3, 4, START, 3, 4], dtype=np.uint16)
    offset = np.array([0, 1, 2, 3, 0, 1, 2])
    x = nextword.context_features(tokens, offset, np.array([2, 3, 6]), vectors, context=2)
    expected = np.array([[START, 2], [2, 3], [START, 3]])  # never the previous sentence's words
    assert np.allclose(x, vectors[expected].reshape(3, -1) / np.sqrt(2))


def test_capped_keeps_at_most_cap_per_word():
    tokens = np.array([5] * 10 + [6] * 2 + [7], dtype=np.uint16)
    kept = nextword.capped(np.arange(13), tokens, 3, np.random.default_rng(0))
    assert sorted(tokens[kept].tolist()) == [5, 5, 5, 6, 6, 7] and len(set(kept.tolist())) == 6


def test_word_vectors_of_interchangeable_words_agree():
    # "cat" (4) and "dog" (5) occur in the same contexts: "the" (2) before, "sat" (3) after
    rng = np.random.default_rng(0)
    sentences = [[START, 2, int(rng.choice([4, 5])), 3, int(rng.choice([UNKNOWN, 6, 7, 8, 9]))]
                 for _ in range(400)]
    vectors = nextword.word_vectors(np.concatenate(sentences).astype(np.uint16), 11, 4, seed=0)
    assert vectors.shape == (11, 4) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[4] @ vectors[5] > 0.99 and abs(vectors[4] @ vectors[2]) < 0.9
    assert np.array_equal(vectors[10], vectors[UNKNOWN])  # id 10 never occurs


@pytest.mark.parametrize(("data", "message"), [
    (b"not an archive", "not an .npz archive"),
    (_archive(np.array([0, 2], np.int32), ["a"]), "tokens uint16"),
    (_archive(np.array([2, 2], np.uint16), ["a"]), "open with the sentence start"),
    (_archive(np.array([0, 3], np.uint16), ["a"]), "index 1 distinct words"),
    (_archive(np.array([0, 2], np.uint16), ["a", "a"]), "distinct words"),
])
def test_bad_files_are_data_errors(serve, data, message):
    serve(data)
    with pytest.raises(DataError, match=message):
        load_nextword()


@pytest.mark.parametrize("option", ["dim", "context", "train_per_class", "test_per_class"])
def test_bad_arguments(option):
    with pytest.raises(ValueError, match=option):
        load_nextword(**{option: 0})


DICTIONARY = """\
Abuse \\A*buse"\\, v. t. [F. abuser; L. abusus.]
   1. To put to a wrong use; to misapply. "Shall flight abuse
      your name?" --Shak.
      [1913 Webster]

            The tellers of news abused the general.
                                                  --Macaulay.
      [1913 Webster]

   2. (Law) To use ill; to maltreat. (a) To put to a wrong use.
      [1913 Webster]

Syn: To maltreat; injure; revile.

Cat \\Cat\\, n. (Zool.) A small animal, the ["o]ne's pet; the cat.
"""


def test_builder_parses_sentences():
    # gone: quotation sources, labels "(Law)", "(Zool.)", "(a)", the etymology, the sentences of
    # fewer than 3 words ("To misapply.", "the cat.", the Syn: list), the repeated "To put to a wrong use."
    assert build_nextword.sentences(DICTIONARY) == [
        ("to", "put", "to", "a", "wrong", "use"), ("shall", "flight", "abuse", "your", "name"),
        ("the", "tellers", "of", "news", "abused", "the", "general"), ("to", "use", "ill"),
        ("a", "small", "animal", "the", "one's", "pet")]


def test_builder_vocabulary_and_encoding():
    corpus = [("b", "a", "c"), ("a", "b", "d"), ("c", "a", "e")]
    words = build_nextword.vocabulary(corpus, 3)
    assert words == ["a", "b", "c"]  # a thrice; b and c twice, in alphabetical order
    assert build_nextword.encode(corpus, words).tolist() == [0, 3, 2, 4, 0, 2, 3, 1, 0, 4, 2, 1]
    with pytest.raises(ValueError, match="fewer than the vocabulary 9"):
        build_nextword.vocabulary(corpus, 9)


def test_builder_output_is_byte_identical_and_loadable():
    files = build_nextword.shipped_files(DICTIONARY, "licence", size=5)
    assert files == build_nextword.shipped_files(DICTIONARY, "licence", size=5)
    assert files["NEXTWORD_LICENSE.txt"] == b"licence"
    tokens, words = read_tokens(files[nextword.DATA_FILE])
    assert words[:2] == ("the", "to") and len(words) == 5 and int((tokens == START).sum()) == 5
    other = build_nextword.shipped_files(DICTIONARY.replace("abused the", "abused"), "licence", size=5)
    assert other[nextword.DATA_FILE] != files[nextword.DATA_FILE]
