"""Optimal-transport top-k (Xie, Dai, Chen, Dai, Zhao, Zha, Wei, Pfister, NeurIPS 2020, "Differentiable
Top-k with Optimal Transport"), sorted variant: entropic transport of the n scores onto K + 1
anchors, one for each of the K top ranks (mass 1/n each) and one bucket for the other n - K ranks
(mass (n - K)/n), epsilon = 1/beta; P[i, r] = n * plan[i, r] for the K rank anchors.

The scores are squashed exactly as in SinkhornSort (`sinkhorn.squash`: a sigmoid of the per-row
standardised scores, with its spread floor), and the rank anchors are SinkhornSort's,
1 - r / (n - 1). The bucket sits at the mean of the anchors of the ranks it stands for,
(n - 1 - K) / (2 (n - 1)); with K >= n - 1 the problem is SinkhornSort's, so both give the same P.
The transport is solved by `transport.py` (log-domain Sinkhorn, implicit backward), at O(n K) per
iteration and O(n K^2 + K^3) for the backward: no preselection is needed.

Masked items (-inf) are removed exactly, as in SinkhornSort (n' real items, anchors and masses of
n' items; ranks r >= n' go to the masked items in equal shares).
"""

from __future__ import annotations

from torch import Tensor

from .relaxation import Relaxation, from_log_ranks
from .sinkhorn import transport_log_ranks

rank_matrix, item_ranks = from_log_ranks(
    lambda scores, index, k, beta: transport_log_ranks(scores, index, k, beta, ranks=k))


def topk_mask(scores: Tensor, k: int, beta: float) -> Tensor:
    """n' * sum_{r<k} plan[i, r] of the problem with K = k, summed in the log domain.  [B, n] -> [B, n]"""
    return transport_log_ranks(scores, None, k, beta, ranks=k).logsumexp(-1).exp()

RELAXATION = Relaxation("ot_topk", "OT top-k", "optimal transport", rank_matrix, item_ranks,
                        cost="O(n K · iterations)", output="an n x (K + 1) plan", needs_m=False,
                        reference="Xie, Dai, Chen, Dai, Zhao, Zha, Wei, Pfister, NeurIPS 2020",
                        topk_mask=topk_mask)
