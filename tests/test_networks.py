from __future__ import annotations

import contextlib
import io
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softtopk.relax.networks.layouts import sorting_network, top_ranks_network

# A 0/1 input that the original's padded bitonic layout leaves unsorted at n = 22.
ORIGINAL_FAILS_22 = [0, 5, 8, 9, 10, 11, 13, 15, 17, 21]

COUNTS = {  # (kind, n, k): (layers, comparators), the paper's counts for the original networks
    ("splitter_selection", 16, 1): (4, 32),
    ("splitter_selection", 16, 5): (10, 50),
    ("splitter_selection", 50, 1): (6, 133),
    ("splitter_selection", 50, 5): (15, 181),
    ("splitter_selection", 100, 1): (7, 316),
    ("splitter_selection", 100, 5): (17, 385),
    ("bitonic", 16, None): (10, 80),
    ("bitonic", 50, None): (21, 492),
    ("bitonic", 100, None): (28, 1334),
}


def apply_hard(network, values: np.ndarray) -> np.ndarray:
    """Run the network on rows of `values` [B, n] with exact min/max comparators."""
    x = values.copy()
    for layer in network:
        lo, hi = np.array(layer).T
        a, b = x[:, lo], x[:, hi]
        x[:, lo], x[:, hi] = np.minimum(a, b), np.maximum(a, b)
    return x


def apply_soft(network, values: np.ndarray) -> np.ndarray:
    """Run the network with a relaxed comparator that mixes both wires with a sigmoid of their gap."""
    x = values.copy()
    for layer in network:
        lo, hi = np.array(layer).T
        a, b = x[:, lo], x[:, hi]
        swap = 1 / (1 + np.exp(b - a))
        x[:, lo], x[:, hi] = a + swap * (b - a), b - swap * (b - a)
    return x


def all_binary(n: int) -> np.ndarray:
    return ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.int8)


def check_sorts(values: np.ndarray, kinds=("bitonic", "odd_even")) -> None:
    n = values.shape[1]
    expected = np.sort(values, axis=1)
    for kind in kinds:
        np.testing.assert_array_equal(apply_hard(sorting_network(kind, n), values), expected, err_msg=kind)


def check_selects(values: np.ndarray, ks) -> None:
    """The k largest values end sorted on wires n-k..n-1 (so the top-k multiset is there too)."""
    n = values.shape[1]
    expected = np.sort(values, axis=1)
    for k in ks:
        out = apply_hard(sorting_network("splitter_selection", n, k), values)
        np.testing.assert_array_equal(out[:, n - k:], expected[:, n - k:], err_msg=f"k={k}")


def check_structure(network, n: int) -> None:
    assert isinstance(network, tuple)
    for layer in network:
        assert isinstance(layer, tuple) and len(layer) >= 1
        wires = [w for pair in layer for w in pair]
        assert all(isinstance(pair, tuple) and len(pair) == 2 for pair in layer)
        assert all(type(w) is int and 0 <= w < n for w in wires)
        assert len(set(wires)) == len(wires)  # disjoint comparators, lo != hi


@pytest.mark.parametrize("n", range(1, 13))
def test_zero_one_principle(n):
    values = all_binary(n)
    check_sorts(values)
    check_selects(values, range(1, n + 1))


def test_splitter_random_binary_n16():
    values = np.random.default_rng(0).integers(0, 2, size=(4000, 16))
    check_selects(values, range(1, 17))


@pytest.mark.parametrize("n", [3, 16, 20, 50, 100])
def test_random_with_ties(n):
    values = np.random.default_rng(n).integers(0, 5, size=(1000, n))
    check_sorts(values)
    check_selects(values, sorted({1, 2, 5, n // 2, n} & set(range(1, n + 1))))


@pytest.mark.parametrize("key", COUNTS)
def test_counts(key):
    network = sorting_network(*key)
    assert (len(network), sum(map(len, network))) == COUNTS[key]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 20, 50, 100])
def test_structure(n):
    for kind, k in [("bitonic", None), ("odd_even", None), ("splitter_selection", 1),
                    ("splitter_selection", (n + 1) // 2), ("splitter_selection", n)]:
        check_structure(sorting_network(kind, n, k), n)


def test_bitonic_layer_count_and_ascending_pairs():
    for n in (2, 4, 8, 16, 32, 64):
        log = n.bit_length() - 1
        network = sorting_network("bitonic", n)
        assert len(network) == log * (log + 1) // 2
        assert all(lo < hi for lo, hi in network[-1])  # the final merge sorts ascending
    assert all(lo < hi for layer in sorting_network("splitter_selection", 50, 5) for lo, hi in layer)
    assert all(lo < hi for layer in sorting_network("odd_even", 9) for lo, hi in layer)


def test_single_wire_and_odd_even_layout():
    for kind, k in [("bitonic", None), ("odd_even", None), ("splitter_selection", 1)]:
        assert sorting_network(kind, 1, k) == ()
    assert sorting_network("odd_even", 5) == (((0, 1), (2, 3)), ((1, 2), (3, 4))) * 2 + (((0, 1), (2, 3)),)
    assert sorting_network("odd_even", 2) == (((0, 1),),)  # the second layer would be empty


def test_cached_identical_object():
    assert sorting_network("bitonic", 20) is sorting_network("bitonic", 20)
    assert sorting_network("bitonic", 20) is sorting_network("bitonic", 20, 3)  # k is ignored
    assert sorting_network("splitter_selection", 20, 3) is sorting_network("splitter_selection", 20, 3)
    assert sorting_network("splitter_selection", 20, 3) is not sorting_network("splitter_selection", 20, 4)


def dense_pairs(layer) -> list[tuple[int, int]]:
    """(min wire, max wire) of each real comparator of one dense layer of diffsort/difftopk."""
    split_a, split_b, combine_min, combine_max = layer[:4]
    pairs = []
    for row in range(split_a.shape[0]):
        if split_a[row].argmax() != split_b[row].argmax():  # else a pass-through row
            pairs.append((int(combine_min[:, row].argmax()), int(combine_max[:, row].argmax())))
    return sorted(pairs)


def reference_layers(dense) -> list[list[tuple[int, int]]]:
    return [pairs for pairs in map(dense_pairs, dense) if pairs]


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 16, 20, 50, 100])
def test_matches_diffsort(n):
    """Identical to the original wherever no real value has to change wires (all sizes the paper uses)."""
    networks = pytest.importorskip("diffsort.networks")
    for kind, build in [("bitonic", networks.bitonic_network), ("odd_even", networks.odd_even_network)]:
        ours = [sorted(layer) for layer in sorting_network(kind, n)]
        assert ours == reference_layers(build(n)), kind


@pytest.mark.parametrize(("n", "k"), [(2, 1), (8, 3), (16, 5), (17, 4), (50, 5), (100, 1)])
def test_splitter_matches_difftopk(n, k):
    networks = pytest.importorskip("difftopk.networks")
    with contextlib.redirect_stdout(io.StringIO()):  # the builder prints its layer count
        dense = networks.sparse_splitter_selection_network(n, k)
    ours = [sorted(layer) for layer in sorting_network("splitter_selection", n, k)]
    assert ours == reference_layers(dense)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), data=st.data())
def test_property_random_sizes(n, data):
    k = data.draw(st.integers(1, n))
    values = np.random.default_rng(n * 41 + k).integers(0, 3, size=(200, n))
    check_structure(sorting_network("splitter_selection", n, k), n)
    check_structure(sorting_network("bitonic", n), n)
    check_sorts(values, ("odd_even", "bitonic"))
    check_selects(values, [k])


@pytest.mark.parametrize("n", [22, 38, 42, 46, 54, 70, 90, 118])
def test_padded_bitonic_sorts_where_the_original_does_not(n):
    """Virtual wires act as -inf, so sizes where the original's layout fails still sort."""
    values = np.random.default_rng(n).integers(0, 2, size=(3000, n)).astype(np.int8)
    check_sorts(values, ("bitonic",))
    one = np.zeros((1, 22), dtype=np.int8)
    one[0, ORIGINAL_FAILS_22] = 1
    check_sorts(one, ("bitonic",))


def test_original_bitonic_layout_fails_at_22():
    """Why the layouts differ at such sizes: the original's pairs leave this input unsorted."""
    networks = pytest.importorskip("diffsort.networks")
    values = np.zeros((1, 22), dtype=np.int8)
    values[0, ORIGINAL_FAILS_22] = 1
    out = apply_hard(reference_layers(networks.bitonic_network(22)), values)
    assert (np.diff(out[0]) < 0).any()


@pytest.mark.parametrize(
    ("args", "error", "name"),
    [
        (("quick", 4), ValueError, "kind"),
        ((None, 4), ValueError, "kind"),
        (("bitonic", 0), ValueError, "n"),
        (("odd_even", -3), ValueError, "n"),
        (("bitonic", 2.0), TypeError, "n"),
        (("bitonic", True), TypeError, "n"),
        (("bitonic", "8"), TypeError, "n"),
        (("splitter_selection", 8), ValueError, "k"),
        (("splitter_selection", 8, 0), ValueError, "k"),
        (("splitter_selection", 8, 9), ValueError, "k"),
        (("splitter_selection", 8, 2.0), TypeError, "k"),
        (("splitter_selection", 0, 1), ValueError, "n"),
    ],
)
def test_bad_input(args, error, name):
    with pytest.raises(error, match=rf"\b{name}\b"):
        sorting_network(*args)


def test_exhaustive_small_permutations():
    """Distinct values: every permutation of 0..n-1 for n <= 6, read off by rank."""
    for n in range(2, 7):
        values = np.array(list(itertools.permutations(range(n))))
        check_sorts(values)
        check_selects(values, range(1, n + 1))


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["bitonic", "odd_even", "splitter_selection"]), n=st.integers(1, 70),
       data=st.data())
def test_top_ranks_network_ends_the_top_wires_exactly(kind, n, data):
    """The pruned network leaves the k top wires bit for bit as the whole network does, relaxed too,
    with a subset of its comparators in the same layer order, and needs every comparator it keeps."""
    k = data.draw(st.integers(1, n))
    full, pruned = sorting_network(kind, n, k), top_ranks_network(kind, n, k)
    values = np.random.default_rng(n * 100 + k).normal(size=(8, n))
    top = slice(n - k, n)
    assert np.array_equal(apply_soft(pruned, values)[:, top], apply_soft(full, values)[:, top])
    assert np.array_equal(apply_hard(pruned, values)[:, top], apply_hard(full, values)[:, top])
    layers = iter(full)  # each kept layer is part of a layer of the whole network, in order
    assert all(any(set(kept) <= set(layer) for layer in layers) for kept in pruned)
    if pruned:  # the last kept layer only has comparators on the top wires themselves
        assert all(lo >= n - k or hi >= n - k for lo, hi in pruned[-1])


def test_top_ranks_network_counts():
    assert sum(map(len, top_ranks_network("bitonic", 100, 5))) == 1121
    assert sum(map(len, top_ranks_network("odd_even", 100, 5))) == 2694
    assert top_ranks_network("bitonic", 16, 16) == sorting_network("bitonic", 16)
