"""SoftSort (Prillo & Eisenschlos, ICML 2020): row r of the relaxed permutation is
softmax_i(-|sort_desc(s)_r - s_i| / tau), tau = 1 / inverse_temperature; only rows r < k are built."""

from __future__ import annotations

from torch import Tensor


def _logits(scores: Tensor, k: int, inverse_temperature: float) -> Tensor:
    """Logits of the first k rows, rank r = 0..k-1 over items i.  [B, n] -> [B, k, n]"""
    top = scores.topk(k, dim=-1).values
    return (top[:, :, None] - scores[:, None, :]).abs() * -inverse_temperature


def rank_matrix(scores: Tensor, k: int, inverse_temperature: float) -> Tensor:
    """P[b, i, r] = probability that item i has rank r (0 = largest), r < k.  [B, n] -> [B, n, k]"""
    return _logits(scores, k, inverse_temperature).softmax(-1).transpose(-2, -1)


def item_ranks(scores: Tensor, index: Tensor, k: int, inverse_temperature: float) -> Tensor:
    """P[b, index[b], r] for r < k, from k x n logits.  [B, n], [B] -> [B, k]"""
    log_p = _logits(scores, k, inverse_temperature).log_softmax(-1)
    return log_p.gather(-1, index[:, None, None].expand(-1, k, 1)).squeeze(-1).exp()
