from __future__ import annotations

import pytest
import torch

from softtopk.relax.neuralsort import _abs_diff_sums, rank_matrix


def dense_reference(scores: torch.Tensor, k: int, inverse_temperature: float) -> torch.Tensor:
    """The O(n^2) NeuralSort formula, rows r = 1..k, as [B, n(item), k(rank)]."""
    n = scores.shape[-1]
    pairwise = (scores[:, :, None] - scores[:, None, :]).abs().sum(-1)
    rank = torch.arange(1, k + 1, dtype=scores.dtype)
    logits = ((n + 1 - 2 * rank)[:, None] * scores[:, None, :] - pairwise[:, None, :]) * inverse_temperature
    return logits.softmax(-1).transpose(-2, -1)


def test_prefix_sums_match_pairwise_sums():
    scores = torch.randn(3, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    scores[0, 3] = scores[0, 5]  # a tie
    expected = (scores[:, :, None] - scores[:, None, :]).abs().sum(-1)
    torch.testing.assert_close(_abs_diff_sums(scores), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 4, 7])
def test_matches_dense_formula(k):
    scores = torch.randn(4, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3 + 50
    expected = dense_reference(scores, k, 0.7)
    torch.testing.assert_close(rank_matrix(scores, k, 0.7), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_agrees_with_difftopk(k):
    difftopk = pytest.importorskip("difftopk")
    scores = torch.randn(4, 6, generator=torch.Generator().manual_seed(5))
    original = difftopk.NeuralSort(tau=0.5)(scores)  # [B, item, rank], ascending ranks
    torch.testing.assert_close(rank_matrix(scores, k, 2.0), original.flip(-1)[:, :, :k], rtol=0, atol=1e-5)
