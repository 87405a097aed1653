"""SinkhornSort (Cuturi, Teboul, Vert, NeurIPS 2019): entropic optimal transport between the
scores, squashed to (0, 1), and n equally spaced anchors (anchor_r = 1 - r / (n - 1) for rank r,
so rank 0 takes the largest score), with uniform marginals, cost (x_i - anchor_r)^2 and
epsilon = 1 / inverse_temperature. P = n * plan is doubly stochastic.

The log-domain iterations run under autograd (unrolled), so the gradients are exact for the
plan that is returned. They start at inverse temperature min(1, beta) and double it every
iteration until it reaches beta (epsilon scaling): the fixed point is the same, but near the
hard limit it is reached in tens instead of thousands of iterations."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from .relaxation import Relaxation

#: Stop once every row of P sums to 1 within this relative error (measured in the log domain);
#: the columns sum to 1 up to rounding after every iteration. Tight enough in float64 that
#: comparisons and finite differences are not limited by where the iterations stop.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
#: Iteration cap. Between the soft and the hard regime (about 1e2 < beta < 1e4 for n >= 8)
#: Sinkhorn converges slowly and may stop here, short of TOLERANCE.
MAX_ITERATIONS = 500
#: Test for convergence every this many iterations (each test waits for the device).
CHECK_EVERY = 10


def _squash(scores: Tensor) -> Tensor:
    """Sigmoid of the per-row standardised scores.  [B, n] -> [B, n] in (0, 1)"""
    centred = scores - scores.mean(-1, keepdim=True)
    var = centred.square().mean(-1, keepdim=True)
    # tiny under the root keeps the value and its gradient finite when all scores are equal.
    return torch.sigmoid(centred / torch.sqrt(var + torch.finfo(scores.dtype).tiny))


def _transport(scores: Tensor, inverse_temperature: float) -> tuple[Tensor, Tensor, Tensor]:
    """Cost and dual potentials (in cost units) with log P = (f_i + g_r - C_ir) * beta + log n.
    [B, n] -> C [B, n(item), n(rank)], f [B, n], g [B, n]"""
    n = scores.shape[-1]
    anchors = torch.linspace(1, 0, n, dtype=scores.dtype, device=scores.device)
    cost = (_squash(scores)[:, :, None] - anchors).square()
    log_marginal = -math.log(n)
    tolerance = TOLERANCE.get(scores.dtype, TOLERANCE[torch.float32])
    f = torch.zeros_like(scores)
    g = torch.zeros_like(scores)
    scale = min(1.0, inverse_temperature)
    settled = False  # the last update ran at the target inverse temperature
    for iteration in range(MAX_ITERATIONS):
        row_lse = torch.logsumexp((g[:, None, :] - cost) * scale, dim=-1)
        # log(n * row sum) of the current plan, whose columns are exact.
        if settled and iteration % CHECK_EVERY == 0:
            if bool((f * scale + row_lse - log_marginal).abs().le(tolerance).all()):
                break
        f = (log_marginal - row_lse) / scale
        g = (log_marginal - torch.logsumexp((f[:, :, None] - cost) * scale, dim=-2)) / scale
        settled = scale == inverse_temperature
        scale = min(2 * scale, inverse_temperature)
    else:
        warnings.warn(
            f"sinkhorn did not converge in {MAX_ITERATIONS} iterations at inverse_temperature="
            f"{inverse_temperature}: its rank probabilities are only approximately normalised; "
            "a lower inverse_temperature converges faster",
            RuntimeWarning,
            stacklevel=4,
        )
    return cost, f, g


def rank_matrix(scores: Tensor, k: int, beta: float) -> Tensor:
    """P[b, i, r] = probability that item i has rank r (0 = largest), r < k.  [B, n] -> [B, n, k]"""
    cost, f, g = _transport(scores, beta)
    log_p = (f[:, :, None] + g[:, None, :k] - cost[:, :, :k]) * beta
    return (log_p + math.log(scores.shape[-1])).exp()


def item_ranks(scores: Tensor, index: Tensor, k: int, beta: float, log: bool = False) -> Tensor:
    """P[b, index[b, j], r] for r < k (log P with `log`); the iterations need the full n x n plan.
    [B, n], [B, J] -> [B, J, k]"""
    cost, f, g = _transport(scores, beta)
    picked_cost = cost.gather(1, index[:, :, None].expand(-1, -1, k))  # [B, J, k]
    log_p = (f.gather(1, index)[:, :, None] + g[:, None, :k] - picked_cost) * beta
    log_p = log_p + math.log(scores.shape[-1])
    return log_p if log else log_p.exp()


RELAXATION = Relaxation("sinkhorn", "SinkhornSort", "optimal transport", rank_matrix, item_ranks,
                        cost="O(n² · iterations)", output="full n x n plan", needs_m=False,
                        reference="Cuturi, Teboul, Vert, NeurIPS 2019")
