from __future__ import annotations

import pytest
import torch

from softtopk.relax.softsort import rank_matrix


def dense_reference(scores: torch.Tensor, k: int, inverse_temperature: float) -> torch.Tensor:
    """The full SoftSort matrix from a complete sort, cut to ranks < k, as [B, n(item), k(rank)]."""
    ordered = scores.sort(-1, descending=True).values
    logits = -(ordered[:, :, None] - scores[:, None, :]).abs() * inverse_temperature
    return logits.softmax(-1).transpose(-2, -1)[..., :k]


@pytest.mark.parametrize("k", [1, 4, 7])
def test_matches_full_sort_formula(k):
    scores = torch.randn(4, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = dense_reference(scores, k, 0.7)
    torch.testing.assert_close(rank_matrix(scores, k, 0.7), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_agrees_with_difftopk(k):
    difftopk = pytest.importorskip("difftopk")
    scores = torch.randn(4, 6, generator=torch.Generator().manual_seed(5))
    original = difftopk.SoftSort(tau=0.5)(-scores).transpose(-2, -1)  # [B, item, rank], ascending ranks
    torch.testing.assert_close(rank_matrix(scores, k, 2.0), original.flip(-1)[:, :, :k], rtol=0, atol=1e-5)
