"""NeuralSort (Grover et al., ICLR 2019): row r (1-based) of the relaxed permutation is
softmax_i(((n + 1 - 2r) s_i - sum_j |s_i - s_j|) / tau), tau = 1 / beta.
Only the rows r <= k are built, and sum_j |s_i - s_j| comes from a sort and prefix sums; with masked
items, n and the sums count the real items only, which is the limit of masked scores -> -inf."""

from __future__ import annotations

import torch
from torch import Tensor

from .permutation_rows import item_ranks_from, rank_matrix_from
from .relaxation import Relaxation


def _abs_diff_sums(scores: Tensor, masked: Tensor | None = None) -> Tensor:
    """sum_j |s_i - s_j| over the real items j, for every item i, in O(n log n).  [B, n] -> [B, n]

    With the values sorted descending, v_1 >= ... >= v_n', and S_{p-1} = v_1 + ... + v_{p-1}, the
    item at position p has sum (S_{p-1} - (p-1) v_p) + ((n'-p) v_p - (T - S_{p-1} - v_p))
    = 2 S_{p-1} + (n' + 2 - 2p) v_p - T, where T is the total. Masked items (score 0 here, `masked`
    True) sort last; their sums are not meaningful. At ties the gradient is that of the order the
    sort chose (a subgradient of |.| at 0)."""
    n = scores.shape[-1]
    if masked is None:
        values, order = scores.sort(dim=-1, descending=True)
        count: Tensor | int = n
    else:
        values, order = scores.masked_fill(masked, -torch.inf).sort(dim=-1, descending=True)
        values = scores.gather(-1, order)  # masked items hold 0 here, so they add nothing
        count = (~masked).sum(-1, keepdim=True)
    before = torch.nn.functional.pad(values.cumsum(-1)[:, :-1], (1, 0))
    position = torch.arange(1, n + 1, dtype=scores.dtype, device=scores.device)
    sums = 2 * before + (count + 2 - 2 * position) * values - values.sum(-1, keepdim=True)
    return torch.zeros_like(scores).scatter(-1, order, sums)


def _logits(scores: Tensor, masked: Tensor | None, k: int, beta: float) -> Tensor:
    """Logits of the first k rows, rank r = 0..k-1 over items i.  [B, n] -> [B, k, n]"""
    # A per-row shift adds a constant to every row of logits: the softmax ignores it, and
    # centring keeps (n + 1 - 2r) s_i small when the scores carry a large offset.
    if masked is None:
        centred, count = scores - scores.amax(-1, keepdim=True).detach(), scores.shape[-1]
    else:
        top = scores.masked_fill(masked, -torch.inf).amax(-1, keepdim=True).detach()
        centred = (scores - top).masked_fill(masked, 0.0)
        count = (~masked).sum(-1, keepdim=True)
    rank = torch.arange(1, k + 1, dtype=scores.dtype, device=scores.device)
    slope = (count + 1 - 2 * rank)[..., None]
    logits = (slope * centred[:, None, :] - _abs_diff_sums(centred, masked)[:, None, :]) * beta
    return logits if masked is None else logits.masked_fill(masked[:, None, :], -torch.inf)


rank_matrix = rank_matrix_from(_logits)
item_ranks = item_ranks_from(_logits)
RELAXATION = Relaxation("neuralsort", "NeuralSort", "permutation rows", rank_matrix, item_ranks,
                        cost="O(n K + n log n)", output="ranks 1..K over all items", needs_m=False,
                        reference="Grover, Wang, Zweig, Ermon, ICLR 2019")
