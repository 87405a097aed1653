"""The ranking relaxations behind `softtopk.rank_probabilities` and the loss: one record per method
(`RELAXATIONS`, in the order the documentation lists them). Adding a method is one module that
defines its `Relaxation` (see `relaxation.py` for the interface) and one entry here."""

from __future__ import annotations

from . import lapsum, networks, neuralsort, ot_topk, sinkhorn, softsort
from .networks.sigmoids import DISTRIBUTIONS as _COMPARATORS
from .relaxation import Relaxation

RELAXATIONS: dict[str, Relaxation] = {r.name: r for r in (
    networks.BITONIC,
    networks.SPLITTER_SELECTION,
    networks.ODD_EVEN,
    neuralsort.RELAXATION,
    softsort.RELAXATION,
    sinkhorn.RELAXATION,
    ot_topk.RELAXATION,
    lapsum.RELAXATION,
)}
METHODS: tuple[str, ...] = tuple(RELAXATIONS)
NETWORK_METHODS: tuple[str, ...] = tuple(name for name, r in RELAXATIONS.items()
                                         if r.family == "sorting network")
"""The sorting networks, whose comparators take `distribution` and `art_lambda`."""
DISTRIBUTIONS: tuple[str, ...] = tuple(_COMPARATORS)
"""The comparator sigmoids of the sorting networks (`distribution`)."""

__all__ = ["DISTRIBUTIONS", "METHODS", "NETWORK_METHODS", "RELAXATIONS", "Relaxation"]
