"""The ranking relaxations behind `softtopk.rank_probabilities` and the loss: one record per method
(`RELAXATIONS`, in the order the documentation lists them). Adding a method is one module that
defines its `Relaxation` (see `relaxation.py` for the interface) and one entry here."""

from __future__ import annotations

import softtopk.sigmoids

from . import lapsum, neuralsort, ot_topk, sinkhorn, softsort, sorting_network
from .relaxation import Relaxation

RELAXATIONS: dict[str, Relaxation] = {r.name: r for r in (
    sorting_network.BITONIC,
    sorting_network.SPLITTER_SELECTION,
    sorting_network.ODD_EVEN,
    neuralsort.RELAXATION,
    softsort.RELAXATION,
    sinkhorn.RELAXATION,
    ot_topk.RELAXATION,
    lapsum.RELAXATION,
)}
METHODS: tuple[str, ...] = tuple(RELAXATIONS)
NETWORK_METHODS = tuple(n for n, r in RELAXATIONS.items() if r.family == "sorting network")
DISTRIBUTIONS = tuple(softtopk.sigmoids.DISTRIBUTIONS)

__all__ = ["DISTRIBUTIONS", "METHODS", "NETWORK_METHODS", "RELAXATIONS", "Relaxation"]
