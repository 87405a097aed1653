"""Public entry point: rank probabilities of every ranking relaxation (and the argument checks the
loss and the operators share)."""

from __future__ import annotations

import torch

from ._checks import check_choice, check_index, check_k, check_positive_finite, check_real, check_scores
from .relax import DISTRIBUTIONS, METHODS, RELAXATIONS

Tensor = torch.Tensor


def check_relaxation(method: str, inverse_temperature: float, distribution: str, art_lambda: float) -> float:
    """Validate the relaxation arguments; returns inverse_temperature as a float."""
    check_choice(method, "method", METHODS)
    beta = check_positive_finite(inverse_temperature, "inverse_temperature")
    if "distribution" in RELAXATIONS[method].options:
        check_choice(distribution, "distribution", tuple(DISTRIBUTIONS))
        check_real(art_lambda, "art_lambda", 0, 1, high_open=True)
    return beta


def relaxation(method: str, beta: float, distribution: str, art_lambda: float):
    """The pair (rank_matrix(scores, k), item_ranks(scores, index, k, log=False)) of a validated
    method, on 2-D float32/float64 scores."""
    return RELAXATIONS[method].bind(beta, distribution=distribution, art_lambda=float(art_lambda))


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Relaxations run in float64 for float64 input and in float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rank_probabilities(
    scores: Tensor,
    k: int,
    method: str,
    inverse_temperature: float = 1.0,
    distribution: str = "cauchy",
    art_lambda: float = 0.25,
    index: Tensor | None = None,
) -> Tensor:
    """Relaxed top-k rank probabilities.

    Args:
        scores: `[..., n]` floating-point scores; rank 0 is the largest.
        k: number of ranks, 1 <= k <= n.
        method: a name of `softtopk.METHODS`, one record each of `softtopk.relax.RELAXATIONS`:
            the sorting networks 'bitonic', 'splitter_selection' and 'odd_even'; the permutation rows
            'neuralsort' and 'softsort' (tau = 1 / inverse_temperature); the optimal transport
            'sinkhorn' (epsilon = 1 / inverse_temperature) and 'ot_topk'; the threshold 'lapsum'.
        inverse_temperature: steepness beta > 0.
        distribution: comparator sigmoid of the sorting networks (`softtopk.relax.DISTRIBUTIONS`):
            'logistic', 'cauchy', 'gaussian', 'reciprocal', 'optimal' or 'logistic_phi'.
        art_lambda: lambda in [0, 1) of 'logistic_phi'.
        index: optional integer tensor `[...]`: return only the probabilities of that item per row.

    Returns:
        `P[..., i, r]` = probability that item i has rank r, `[..., n, k]`; with `index`,
        `P[..., index, r]`, `[..., k]`. Computed in float32 for half-precision input, returned
        in the input's dtype.
    """
    check_scores(scores)
    n = scores.shape[-1]
    check_k(k, n)
    beta = check_relaxation(method, inverse_temperature, distribution, art_lambda)
    batch_shape = scores.shape[:-1]
    full, item = relaxation(method, beta, distribution, art_lambda)
    flat = scores.reshape(-1, n).to(compute_dtype(scores.dtype)).contiguous()
    if index is not None:
        check_index(index, batch_shape, n)
    with torch.autocast(scores.device.type, enabled=False):
        if index is None:
            out = full(flat, k).reshape(*batch_shape, n, k)
        else:
            out = item(flat, index.reshape(-1, 1).long(), k).reshape(*batch_shape, k)
    return out.to(scores.dtype)

