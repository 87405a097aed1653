"""NeuralSort (Grover et al., ICLR 2019): row r (1-based) of the relaxed permutation is
softmax_i(((n + 1 - 2r) s_i - sum_j |s_i - s_j|) / tau), tau = 1 / inverse_temperature.
Only the rows r <= k are built, and sum_j |s_i - s_j| comes from a sort and prefix sums."""

from __future__ import annotations

import torch
from torch import Tensor


def _abs_diff_sums(scores: Tensor) -> Tensor:
    """sum_j |s_i - s_j| for every item i in O(n log n).  [B, n] -> [B, n]

    With the values sorted descending, v_1 >= ... >= v_n, and S_{p-1} = v_1 + ... + v_{p-1},
    the item at position p has sum (S_{p-1} - (p-1) v_p) + ((n-p) v_p - (T - S_{p-1} - v_p))
    = 2 S_{p-1} + (n + 2 - 2p) v_p - T, where T is the total."""
    n = scores.shape[-1]
    values, order = scores.sort(dim=-1, descending=True)
    before = torch.nn.functional.pad(values.cumsum(-1)[:, :-1], (1, 0))
    position = torch.arange(1, n + 1, dtype=scores.dtype, device=scores.device)
    sums = 2 * before + (n + 2 - 2 * position) * values - values.sum(-1, keepdim=True)
    return torch.zeros_like(scores).scatter(-1, order, sums)


def _logits(scores: Tensor, k: int, inverse_temperature: float) -> Tensor:
    """Logits of the first k rows, rank r = 0..k-1 over items i.  [B, n] -> [B, k, n]"""
    n = scores.shape[-1]
    # A per-row shift adds a constant to every row of logits: the softmax ignores it, and
    # centring keeps (n + 1 - 2r) s_i small when the scores carry a large offset.
    centred = scores - scores.amax(-1, keepdim=True).detach()
    rank = torch.arange(1, k + 1, dtype=scores.dtype, device=scores.device)
    slope = (n + 1 - 2 * rank)[:, None]
    return (slope * centred[:, None, :] - _abs_diff_sums(centred)[:, None, :]) * inverse_temperature


def rank_matrix(scores: Tensor, k: int, inverse_temperature: float) -> Tensor:
    """P[b, i, r] = probability that item i has rank r (0 = largest), r < k.  [B, n] -> [B, n, k]"""
    return _logits(scores, k, inverse_temperature).softmax(-1).transpose(-2, -1)


def item_ranks(scores: Tensor, index: Tensor, k: int, inverse_temperature: float) -> Tensor:
    """P[b, index[b], r] for r < k, from k x n logits.  [B, n], [B] -> [B, k]"""
    log_p = _logits(scores, k, inverse_temperature).log_softmax(-1)
    return log_p.gather(-1, index[:, None, None].expand(-1, k, 1)).squeeze(-1).exp()
