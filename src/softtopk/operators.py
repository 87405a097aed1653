"""Operators from the ranking relaxations: the soft top-k mask, soft ranks and soft sorted values.

With P[i, r] the probability that item i has rank r (rank 0 = the largest) of a relaxation in
`softtopk.relax.RELAXATIONS`:

    soft_topk_mask:  sum_{r<k} P[i, r]
    soft_rank:       sum_r r P[i, r], with k = n
    soft_sort:       sum_i P[i, r] x_i, descending

A method with a cheaper direct form uses it (`Relaxation.topk_mask`, `Relaxation.soft_ranks`:
LapSum's mask is its membership m_i(k), from one threshold; LapSum's soft rank is its own closed
form, a sum of Laplace CDFs of pairwise differences); the sorting networks sort their own relaxed
values. Every operator works along `dim` of a tensor with any number of batch dimensions, computes
in float32 for half-precision input (float64 for float64) and returns the input's dtype.
"""

from __future__ import annotations

import math

import torch

from ._checks import check_choice, check_int, check_k, check_scores
from .ranking import METHODS, check_relaxation, compute_dtype
from .relax import RELAXATIONS, Relaxation, networks

Tensor = torch.Tensor

#: The sorting networks' options, as `rank_probabilities` and `soft_sort` default them.
NETWORK_DEFAULTS = {"distribution": "cauchy", "art_lambda": 0.25}


def _check_dim(dim: object, ndim: int) -> int:
    """An int in [-ndim, ndim), returned in [0, ndim)."""
    dim = check_int(dim, "dim")
    if not -ndim <= dim < ndim:
        raise ValueError(f"dim must lie in [{-ndim}, {ndim - 1}] for x with {ndim} dimensions, got {dim}")
    return dim % ndim


def _method(method: object, inverse_temperature: float, options: dict[str, object]
            ) -> tuple[Relaxation, float, dict[str, object]]:
    """The relaxation, beta and its options (defaults filled in); an option the method does not take
    is a TypeError."""
    check_choice(method, "method", METHODS)
    relaxation = RELAXATIONS[method]  # type: ignore[index]
    unknown = sorted(set(options) - set(relaxation.options))
    if unknown:
        takes = ", ".join(map(repr, relaxation.options)) or "no options"
        raise TypeError(f"method {method!r} takes no argument {unknown[0]!r} (it takes {takes})")
    full = {**NETWORK_DEFAULTS, **options}
    beta = check_relaxation(method, inverse_temperature, full["distribution"], full["art_lambda"])
    full["art_lambda"] = float(full["art_lambda"])
    return relaxation, beta, {name: full[name] for name in relaxation.options}


def _rows(x: object, dim: object, name: str = "x") -> tuple[Tensor, int]:
    """x (the argument `name`) validated, with `dim` moved last, and `dim` in [0, x.dim())."""
    if isinstance(x, Tensor) and x.dim() > 0:
        dim = _check_dim(dim, x.dim())
        x = x.movedim(dim, -1)
    return check_scores(x, name), dim  # type: ignore[return-value]


def _along(x: Tensor, dim: int, rows_fn) -> Tensor:
    """`rows_fn([B, n] in the compute dtype) -> [B, n]` applied to the rows of x along `dim`
    (already moved last), returned in x's original layout and dtype."""
    n = x.shape[-1]
    flat = x.reshape(-1, n).to(compute_dtype(x.dtype)).contiguous()
    with torch.autocast(x.device.type, enabled=False):
        out = rows_fn(flat) if flat.shape[0] else flat.clone()
    return out.reshape(x.shape).movedim(-1, dim).to(x.dtype)


def soft_topk_mask(x: Tensor, k: int, *, method: str, inverse_temperature: float = 1.0, dim: int = -1,
                   **method_kwargs: object) -> Tensor:
    """Soft top-k mask: the probability that each item is among the k largest along `dim`.

    Args:
        x: floating-point tensor `[..., n, ...]`; `-inf` masks an item (mask 0).
        k: 1 <= k <= n.
        method: one of `softtopk.METHODS`.
        inverse_temperature: beta > 0; large beta gives the hard top-k mask.
        dim: the dimension of the items.
        method_kwargs: the method's own options (`distribution`, `art_lambda` for the sorting networks).

    Returns:
        `x`'s shape and dtype, entries in [0, 1] summing to k along `dim` (to float precision; to the
        solver's tolerance for 'sinkhorn' and 'ot_topk'); to min(k, n') where only n' < k items are real.
    """
    relaxation, beta, options = _method(method, inverse_temperature, method_kwargs)
    x, dim = _rows(x, dim)
    check_k(k, x.shape[-1])

    def mask(rows: Tensor) -> Tensor:
        if relaxation.topk_mask is not None:
            out = relaxation.topk_mask(rows, k, beta, **options)
        else:
            out = relaxation.rank_matrix(rows, k, beta, **options).sum(-1)
        return out.masked_fill(rows == -math.inf, 0.0)

    return _along(x, dim, mask)


def soft_rank(x: Tensor, *, method: str, inverse_temperature: float = 1.0, dim: int = -1,
              **method_kwargs: object) -> Tensor:
    """Soft ranks along `dim`, 0-based, rank 0 = the largest: the limit of large beta is
    `x.argsort(dim, descending=True).argsort(dim)` (torchsort's `soft_rank` is 1-based and ascending:
    its rank of x equals 1 + this rank of -x, and n - this rank).

    Args:
        x: floating-point tensor `[..., n, ...]`; `-inf` masks an item: it ranks below every real item,
            the masked items of a row tied, (n' + n - 1) / 2 each.
        method, inverse_temperature, method_kwargs: as for `soft_topk_mask`.
        dim: the dimension of the items.

    Returns:
        `x`'s shape and dtype: sum_r r P[i, r] of the method's full rank matrix (k = n); for 'lapsum'
        its own O(n log n) form sum_{j != i} F(beta (x_j - x_i)), F the Laplace CDF.
    """
    relaxation, beta, options = _method(method, inverse_temperature, method_kwargs)
    x, dim = _rows(x, dim)

    def ranks(rows: Tensor) -> Tensor:
        n = rows.shape[-1]
        if relaxation.soft_ranks is not None:
            return relaxation.soft_ranks(rows, beta, **options)
        p = relaxation.rank_matrix(rows, n, beta, **options)
        out = p @ torch.arange(n, dtype=rows.dtype, device=rows.device)
        masked = rows == -math.inf  # the networks order masked items by wire: tie them
        return torch.where(masked, (n - 1 + (~masked).sum(-1, keepdim=True)) / 2, out)

    return _along(x, dim, ranks)


def soft_sort(scores: Tensor, method: str = "bitonic", inverse_temperature: float = 1.0,
              distribution: str = "cauchy", art_lambda: float = 0.25, *, dim: int = -1) -> Tensor:
    """Relaxed sorted values of `scores` along `dim`, descending.  `[..., n, ...] -> [..., n, ...]`

    The sorting networks sort their own relaxed values (each comparator mixes the values of its two
    wires); every other method gives sum_i P[i, r] x_i of its full rank matrix. `distribution` and
    `art_lambda` are the sorting networks' options (ignored by the other methods). Masked (-inf) items
    end last, as -inf.
    """
    check_choice(method, "method", METHODS)
    network = RELAXATIONS[method].family == "sorting network"
    options = {"distribution": distribution, "art_lambda": art_lambda} if network else {}
    relaxation, beta, options = _method(method, inverse_temperature, options)
    x, dim = _rows(scores, dim, "scores")

    def values(rows: Tensor) -> Tensor:
        if network:
            return networks.sorted_values(rows, method, beta, options["distribution"], options["art_lambda"])
        n = rows.shape[-1]
        real = rows > -math.inf
        p = relaxation.rank_matrix(rows, n, beta, **options)
        out = (p * rows.masked_fill(~real, 0.0)[:, :, None]).sum(1)
        ranks_of_real = torch.arange(n, device=rows.device) < real.sum(-1, keepdim=True)
        return out.masked_fill(~ranks_of_real, -math.inf)

    return _along(x, dim, values)
