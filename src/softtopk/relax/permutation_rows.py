"""Relaxations whose row r is a softmax over the items (NeuralSort, SoftSort): the full matrix and
the rows of given items both come from the logits `[B, k, n]` of the first k rows.

`row_logits(scores, masked, k, beta)` gets scores whose masked items are set to 0 and the mask
(None where nothing is masked), and must give masked items a logit of -inf. The ranks r >= n' of a
row with n' real items belong to its masked items: there a real item has probability 0 and the
masked items share the rank equally.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .relaxation import masked_items, masked_log_ranks

Tensor = torch.Tensor
RowLogits = Callable[[Tensor, "Tensor | None", int, float], Tensor]


def _prepare(scores: Tensor) -> tuple[Tensor, Tensor | None]:
    masked = masked_items(scores)
    return (scores if masked is None else scores.masked_fill(masked, 0.0)), masked


def _real_ranks(masked: Tensor, k: int) -> Tensor:
    """`[B, k]`: rank r < number of real items."""
    return torch.arange(k, device=masked.device) < (~masked).sum(-1, keepdim=True)


def rank_matrix_from(row_logits: RowLogits) -> Callable[[Tensor, int, float], Tensor]:
    def rank_matrix(scores: Tensor, k: int, beta: float) -> Tensor:
        """P[b, i, r] = probability that item i has rank r (0 = largest), r < k.  [B, n] -> [B, n, k]"""
        clean, masked = _prepare(scores)
        logits = row_logits(clean, masked, k, beta)
        if masked is not None:
            masked_rows = torch.zeros_like(logits).masked_fill(~masked[:, None, :], -torch.inf)
            logits = torch.where(_real_ranks(masked, k)[:, :, None], logits, masked_rows)
        return logits.softmax(-1).transpose(-2, -1)

    return rank_matrix


def item_ranks_from(row_logits: RowLogits) -> Callable[..., Tensor]:
    def item_ranks(scores: Tensor, index: Tensor, k: int, beta: float, log: bool = False) -> Tensor:
        """P[b, index[b, j], r] for r < k (log P with `log`).  [B, n], [B, J] -> [B, J, k]"""
        clean, masked = _prepare(scores)
        log_p = row_logits(clean, masked, k, beta).log_softmax(-1)
        log_p = log_p.gather(-1, index[:, None, :].expand(-1, k, -1)).transpose(-2, -1)
        if masked is not None:
            real = ~masked
            count = real.sum(-1, keepdim=True)
            log_p = masked_log_ranks(log_p, real.gather(-1, index), count, scores.shape[-1])
        return log_p if log else log_p.exp()

    return item_ranks
