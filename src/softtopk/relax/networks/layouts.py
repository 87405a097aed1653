"""Comparator layouts of the sorting and selection networks, built once per (kind, n, k) and cached.

A network is a tuple of layers; a layer is a tuple of disjoint comparators `(lo, hi)` with
`lo != hi`: the smaller of the two values goes to wire `lo`, the larger to wire `hi`. Wires are
in ascending order: after the network wire `n - 1` holds the largest value, so wire `n - 1 - r`
holds rank `r` (rank 0 = largest). Every layer holds at least one comparator.
"""

from __future__ import annotations

from ..._checks import check_choice, check_int, check_k

Comparator = tuple[int, int]
Network = tuple[tuple[Comparator, ...], ...]


def sorting_network(kind: str, n: int, k: int | None = None) -> Network:
    """Layers of disjoint comparators `(lo, hi)` on `n` wires; wire `hi` receives the larger value.

    `'bitonic'` and `'odd_even'` sort all `n` wires ascending (`k` is ignored); bitonic for `n` not a
    power of two pads as the original does, which sorts only for some `n` (see `_bitonic`).
    `'splitter_selection'` (needs `1 <= k <= n`) only guarantees ranks `0..k-1`: the `k` largest
    values end sorted on wires `n-1, ..., n-k`. For `n = 1` the network has no layers.
    The result is cached and shared between calls; it is made of tuples, so it cannot be changed.
    """
    check_choice(kind, "kind", tuple(_LAYERS))
    n = check_int(n, "n", low=1)
    if kind == "splitter_selection":
        if k is None:
            raise ValueError("k is required for kind='splitter_selection': an int with 1 <= k <= n")
        check_k(k, n)
    else:
        k = None
    return _build(kind, n, k)


def top_ranks_network(kind: str, n: int, k: int) -> Network:
    """The comparators of `sorting_network(kind, n, k)` that can change what ends on the wires of ranks
    0..k-1 (wires n-1, ..., n-k), in their layers; layers left empty are dropped. The rest only move
    values that never reach those wires, so the k wires end exactly as after the whole network (e.g.
    bitonic on 100 wires for k = 5 keeps 1121 of its 1334 comparators, odd-even 2694 of 4950)."""
    check_k(k, n)
    needed = set(range(n - k, n))
    kept_layers = []
    for layer in reversed(sorting_network(kind, n, k)):
        kept = tuple(c for c in layer if c[0] in needed or c[1] in needed)
        if kept:
            needed.update(wire for comparator in kept for wire in comparator)
            kept_layers.append(kept)
    return tuple(reversed(kept_layers))


# A plain dict, not functools.cache: torch.compile then reads a built network instead of tracing the build.
_NETWORKS: dict[tuple[str, int, int | None], Network] = {}


def _build(kind: str, n: int, k: int | None) -> Network:
    network = _NETWORKS.get((kind, n, k))
    if network is None:
        network = _NETWORKS[kind, n, k] = _layout(kind, n, k)
    return network


def _layout(kind: str, n: int, k: int | None) -> Network:
    return tuple(tuple(layer) for layer in _LAYERS[kind](n, k) if layer)


def _bitonic(n: int) -> list[list[Comparator]]:
    """Bitonic sorter on the next power of two `size >= n` whose `size - n` lowest positions hold
    virtual values of -inf. Stage `s` merges blocks of `2^(s+1)` positions, alternately ascending
    and descending; the last stage has one ascending block.

    Only comparators between two real values are kept. One between a real and a virtual value has a
    known outcome: the real value goes to the max position, so at most the wire that carries it
    changes position, at no cost. Wires are finally named by the position they end on, so that wire
    `n - 1 - r` holds rank r. Where no real value ever moves (n a power of two, 6, 7, 12, 24, ...)
    this is exactly the original's layout; the original, which keeps every real value in place, does
    not sort for some n (22, 38, 42..46, ...)."""
    size = 1 << (n - 1).bit_length()
    virtual = size - n
    wire_at: list[int | None] = [None] * virtual + list(range(n))  # position -> wire
    layers = []
    for stage in range(size.bit_length() - 1):
        for step in range(stage, -1, -1):
            half = 1 << step
            layer = []
            for start in range(0, size, 2 * half):
                for a in range(start, start + half):
                    lo, hi = (a + half, a) if (a >> (stage + 1)) & 1 else (a, a + half)
                    if wire_at[lo] is not None and wire_at[hi] is not None:
                        layer.append((wire_at[lo], wire_at[hi]))
                    elif wire_at[lo] is not None:
                        wire_at[hi], wire_at[lo] = wire_at[lo], None
            layers.append(layer)
    name = {wire_at[virtual + i]: i for i in range(n)}
    return [[(name[lo], name[hi]) for lo, hi in layer] for layer in layers]


def _odd_even(n: int) -> list[list[Comparator]]:
    """Odd-even transposition sort: `n` layers of neighbour comparators, starting at wires (0, 1)."""
    return [[(i, i + 1) for i in range(layer % 2, n - 1, 2)] for layer in range(n)]


def _splitter_selection(n: int, k: int) -> list[list[Comparator]]:
    """Borgelt's splitter selection network (Petersen, Kuehne, Borgelt, Deussen, ICML 2022), built on
    lanes where lane 0 ends with the largest value, then mirrored (lane l -> wire n-1-l) so the largest
    value ends on wire n-1. Every lane carries the best rank its value can still have; in passes
    `lowest` = 0, 1, ..., for the ranks k-1 down to `lowest`, the lanes that share that rank (two or
    more) get a splitter cascade, after which the lane at position p of the group has gained
    2^popcount(p) - 1 in rank. It stops after a pass that lays nothing; the k largest values then end
    on lanes 0..k-1, sorted."""
    min_rank = [0] * n  # the best rank the value on each lane can still have
    free = [0] * n  # the first layer in which each lane has no comparator yet
    layers: list[list[Comparator]] = []

    def cascade(lanes: list[int]) -> None:
        q = len(lanes)
        depth = (q - 1).bit_length()
        first = max(free[lane] for lane in lanes)
        for i in range(depth):
            if first + i == len(layers):
                layers.append([])
            h = 1 << (depth - i - 1)
            for start in range(0, q, 2 * h):
                for j in range(start, min(start + h, q - h)):
                    # lanes[j] gets the larger value: on wires that is the higher one.
                    layers[first + i].append((n - 1 - lanes[j + h], n - 1 - lanes[j]))
        for p, lane in enumerate(lanes):
            min_rank[lane] += (1 << p.bit_count()) - 1
            free[lane] = first + depth

    lowest = 0
    laid = True
    while laid:
        laid = False
        for rank in range(k - 1, lowest - 1, -1):
            group = [lane for lane in range(n) if min_rank[lane] == rank]
            if len(group) >= 2:
                cascade(group)
                laid = True
        lowest += 1
    return layers


_LAYERS = {  # the layouts by kind: (n, k) -> layers; k matters to splitter selection alone
    "bitonic": lambda n, k: _bitonic(n),
    "odd_even": lambda n, k: _odd_even(n),
    "splitter_selection": _splitter_selection,
}
