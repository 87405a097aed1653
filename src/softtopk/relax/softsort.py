"""SoftSort (Prillo & Eisenschlos, ICML 2020): row r of the relaxed permutation is
softmax_i(-|sort_desc(s)_r - s_i| / tau), tau = 1 / beta; only rows r < k are built."""

from __future__ import annotations

from torch import Tensor

from .permutation_rows import item_ranks_from, rank_matrix_from
from .relaxation import Relaxation


def _logits(scores: Tensor, masked: Tensor | None, k: int, beta: float) -> Tensor:
    """Logits of the first k rows, rank r = 0..k-1 over items i.  [B, n] -> [B, k, n]"""
    if masked is None:
        top = scores.topk(k, dim=-1).values
    else:  # the rows of ranks held by masked items are replaced by the caller
        top = scores.masked_fill(masked, -float("inf")).topk(k, dim=-1).values
        top = top.masked_fill(top == -float("inf"), 0.0)
    logits = (top[:, :, None] - scores[:, None, :]).abs() * -beta
    return logits if masked is None else logits.masked_fill(masked[:, None, :], -float("inf"))


rank_matrix = rank_matrix_from(_logits)
item_ranks = item_ranks_from(_logits)
RELAXATION = Relaxation("softsort", "SoftSort", "permutation rows", rank_matrix, item_ranks,
                        cost="O(n K)", output="ranks 1..K over all items", needs_m=False,
                        reference="Prillo, Eisenschlos, ICML 2020")
