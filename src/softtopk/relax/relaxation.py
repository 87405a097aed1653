"""What every ranking relaxation provides, and the conventions they share.

Every relaxation takes validated 2-D scores `[B, n]` (float32 or float64), its inverse temperature
`beta` and its own options, and provides

- `rank_matrix(scores, k, beta, ...) -> P [B, n, k]`, `P[b, i, r]` = probability that item i has
  rank r (rank 0 = the largest score), and
- `item_ranks(scores, index, k, beta, ..., log=False) -> [B, J, k]`, the rows `P[b, index[b, j], :]`
  of the items `index [B, J]` without building the whole matrix (their logarithms with `log=True`,
  computed so that they stay finite and keep a gradient where the probabilities underflow).

Masked items: a score of `-inf` marks an item that takes no part. It never takes a rank above a
real item, its probabilities of the ranks of real items are 0 and it gets a zero gradient; the
relaxations that do not depend on the order of the items give exactly the result for the scores
with the masked items removed. `+inf` and NaN are not masks: they give NaN, as in cross-entropy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from .._checks import eager_cpu

Tensor = torch.Tensor


@dataclass(frozen=True)
class Relaxation:
    """One ranking relaxation: its functions and what the documentation says of it.

    `options` names the keyword arguments beyond `beta` that its functions take (the sorting
    networks: `distribution`, `art_lambda`). Optional direct forms of the operators, where a method
    has one cheaper than its rank matrix (else the operators reduce `rank_matrix`):
    `topk_mask(scores, k, beta, ...) -> [B, n]`, sum_{r<k} P[b, i, r], and
    `soft_ranks(scores, beta, ...) -> [B, n]`, the method's soft rank of each item (0 = the largest).
    """

    name: str
    title: str
    family: str
    rank_matrix: Callable[..., Tensor]
    item_ranks: Callable[..., Tensor]
    options: tuple[str, ...] = ()
    cost: str = ""
    output: str = ""
    needs_m: bool = False
    reference: str = ""
    topk_mask: Callable[..., Tensor] | None = None
    soft_ranks: Callable[..., Tensor] | None = None

    def bind(self, beta: float, **options: object) -> tuple[Callable[..., Tensor], Callable[..., Tensor]]:
        """`(rank_matrix(scores, k), item_ranks(scores, index, k, log=False))` with the parameters bound;
        options this relaxation does not take are dropped."""
        mine = {name: options[name] for name in self.options}
        return partial(self.rank_matrix, beta=beta, **mine), partial(self.item_ranks, beta=beta, **mine)


def masked_items(scores: Tensor) -> Tensor | None:
    """`scores == -inf` `[B, n]`, or None where no item is masked. The check is skipped (the mask is
    always returned) where it would wait for the device or break a compiled graph."""
    if not eager_cpu(scores):
        return scores == -torch.inf
    return scores == -torch.inf if scores.numel() and scores.amin() == -torch.inf else None


def masked_log_ranks(log_p: Tensor, real: Tensor, count: Tensor, n: int) -> Tensor:
    """The masked items' share of the ranks, on log P `[B, J, k]` of items that are `real [B, J]`:
    a row with n' = `count [B, 1]` real items gives its ranks r < n' to the real items (log P of a
    masked item there: -inf) and its ranks r >= n' to the masked items, equally (a real item's log P
    there: -inf), as the limit of equal scores going to -inf."""
    real_rank = (torch.arange(log_p.shape[-1], device=log_p.device) < count)[:, None, :]  # [B, 1, k]
    share = -torch.log((n - count).clamp(min=1).to(log_p.dtype))[:, :, None]
    return torch.where(real[:, :, None], log_p.masked_fill(~real_rank, -torch.inf),
                       torch.where(real_rank, -torch.inf, share))


def from_log_ranks(log_ranks: Callable[[Tensor, Tensor | None, int, float], Tensor]
                   ) -> tuple[Callable[..., Tensor], Callable[..., Tensor]]:
    """`(rank_matrix, item_ranks)` of a relaxation computed in the log domain, from
    `log_ranks(scores, index or None, k, beta) -> log P [B, J or n, k]`."""

    def rank_matrix(scores: Tensor, k: int, beta: float) -> Tensor:
        """P[b, i, r] = probability that item i has rank r (0 = largest), r < k.  [B, n] -> [B, n, k]"""
        return log_ranks(scores, None, k, beta).exp()

    def item_ranks(scores: Tensor, index: Tensor, k: int, beta: float, log: bool = False) -> Tensor:
        """P[b, index[b, j], r] for r < k (log P with `log`).  [B, n], [B, J] -> [B, J, k]"""
        log_p = log_ranks(scores, index, k, beta)
        return log_p if log else log_p.exp()

    return rank_matrix, item_ranks
