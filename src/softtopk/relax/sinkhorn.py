"""SinkhornSort (Cuturi, Teboul, Vert, NeurIPS 2019): entropic optimal transport between the
scores, squashed to (0, 1), and n equally spaced anchors (anchor_r = 1 - r / (n - 1) for rank r,
so rank 0 takes the largest score), with uniform marginals, cost (x_i - anchor_r)^2 and
epsilon = 1 / beta. P = n * plan is doubly stochastic. The transport is solved by `transport.py`
(log-domain Sinkhorn and Newton steps with epsilon scaling; backward by implicit differentiation).

Squash (shared with OT top-k): x_i = sigmoid((s_i - mean) / max(std, SPREAD_FLOOR)), mean and
(population) std over the row's real items. The floor bounds the gradient of (near-)constant rows,
where dividing by the std itself made it explode: for the loss (batch 8, 20 classes,
p_k = [.5, 0, 0, 0, .5], m = None, beta = 1) the gradient norm was 5e17 at all-equal logits and
5.9e4 at randn logits x 1e-6, against 0.11 at randn logits. The floor is absolute, in logit units:
rows whose spread is below it are treated as nearly tied instead of being blown up to unit spread;
rows with a larger spread are squashed exactly as without it. With SPREAD_FLOOR = 0.1 the gradient
norms at that setting are (float32)

    randn 0.109, all-equal 0.624, randn x 1e-6 0.624, all-equal + 1e-7 noise 0.624,

5.7x the norm at randn logits (6.9x at batch 16 x 100 classes, 7.9x at 4 x 500; 1e-2 would give
53-74x). At a tie the norm grows like beta / SPREAD_FLOOR, because the relaxation itself sharpens
with beta (19-35x at beta = 30, 48-200x at beta = 100; NeuralSort: 4.2x at beta = 1, 1749x at
beta = 100).

Masked items (score -inf) are removed exactly: a row with n' real items has n' anchors
1 - r / (n' - 1), marginals 1 / n' and P = n' * plan over its real items; ranks r >= n' go to the
masked items, which share them equally (1 / (n - n') each) and get a zero gradient.

`transport_log_ranks` is written for both SinkhornSort (one anchor per rank) and OT top-k (anchors
for the first ranks and one for the rest).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .relaxation import Relaxation, from_log_ranks, masked_items, masked_log_ranks
from .transport import entropic_transport

#: Smallest spread (in logit units) the standardisation divides by; see the module docstring.
SPREAD_FLOOR = 0.1


def squash(scores: Tensor, real: Tensor, count: Tensor) -> Tensor:
    """sigmoid((s - mean) / max(std, SPREAD_FLOOR)) over the real items of each row; masked items
    get 0.5.  scores [B, n] (masked items may hold anything), real [B, n], count [B, 1] -> [B, n]"""
    count = count.clamp(min=1)
    clean = scores.masked_fill(~real, 0.0)
    centred = (clean - clean.sum(-1, keepdim=True) / count).masked_fill(~real, 0.0)
    variance = centred.square().sum(-1, keepdim=True) / count
    return torch.sigmoid(centred / variance.clamp(min=SPREAD_FLOOR**2).sqrt())


def _anchors(count: Tensor, ranks: int, bucket: bool) -> tuple[Tensor, Tensor]:
    """Positions and log masses `[B, ranks (+1)]` of the rank anchors of rows with `count` `[B, 1]`
    real items, and with `bucket` one last anchor for their remaining ranks, at the mean of the
    positions those ranks would have (so that it is the anchor of rank n' - 1 where one remains)."""
    span = (count - 1).clamp(min=1)
    rank = torch.arange(ranks, dtype=count.dtype, device=count.device)
    positions = 1 - rank / span
    log_mass = torch.where(rank < count, -torch.log(count), -math.inf)
    if bucket:
        rest = count - ranks
        positions = torch.cat([positions, (rest - 1).clamp(min=0) / (2 * span)], dim=-1)
        rest_mass = torch.where(rest > 0, torch.log(rest.clamp(min=1) / count), -math.inf)
        log_mass = torch.cat([log_mass, rest_mass], dim=-1)
    return positions, log_mass


def transport_log_ranks(scores: Tensor, index: Tensor | None, k: int, beta: float, ranks: int) -> Tensor:
    """log P[b, i, r], r < k, of the items `index` `[B, J]` (every item with None), from the
    entropic transport of the squashed scores onto `ranks` rank anchors, plus a bucket anchor for
    the remaining ranks where ranks < n.  [B, n] -> [B, J or n, k]"""
    n, dtype = scores.shape[-1], scores.dtype
    masked = masked_items(scores)
    real = torch.ones_like(scores, dtype=torch.bool) if masked is None else ~masked
    exact_count = real.sum(-1, keepdim=True).double()  # marginals in float64: they balance exactly
    count = exact_count.to(dtype)
    x = squash(scores, real, count)
    positions, log_b = _anchors(exact_count, ranks, bucket=ranks < n)
    # [B, n, m] in [0, 1], laid out anchor-major as the solver works on it
    cost = (x[:, None, :] - positions.to(dtype)[:, :, None]).square().transpose(1, 2)
    log_a = torch.where(real, -torch.log(exact_count), -math.inf)
    alpha, gamma = entropic_transport(cost, log_a, log_b, beta)
    cost = cost[:, :, :k].to(alpha.dtype)  # the transport may have run in float64
    if index is not None:
        alpha, real = alpha.gather(1, index), real.gather(1, index)
        cost = cost.gather(1, index[:, :, None].expand(-1, -1, k))
    log_p = alpha[:, :, None] + gamma[:, None, :k] - beta * cost + torch.log(count)[:, :, None]
    if masked is not None:
        log_p = masked_log_ranks(log_p, real, count, n)
    return log_p.to(dtype)


rank_matrix, item_ranks = from_log_ranks(  # one anchor per rank: the full n x n plan
    lambda scores, index, k, beta: transport_log_ranks(scores, index, k, beta, ranks=scores.shape[-1]))

RELAXATION = Relaxation("sinkhorn", "SinkhornSort", "optimal transport", rank_matrix, item_ranks,
                        cost="O(n² · iterations)", output="the full n x n plan", needs_m=True,
                        reference="Cuturi, Teboul, Vert, NeurIPS 2019")
