from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from softtopk.relax.softsort import item_ranks, rank_matrix


def dense_reference(scores: torch.Tensor, k: int, inverse_temperature: float) -> torch.Tensor:
    """The full SoftSort matrix from a complete sort, cut to ranks < k, as [B, n(item), k(rank)]."""
    ordered = scores.sort(-1, descending=True).values
    logits = -(ordered[:, :, None] - scores[:, None, :]).abs() * inverse_temperature
    return logits.softmax(-1).transpose(-2, -1)[..., :k]


def hard_ranks(scores: torch.Tensor, k: int) -> torch.Tensor:
    """One-hot ranks (0 = largest) of tie-free scores, [B, n, k]."""
    rank = scores.argsort(-1, descending=True).argsort(-1)
    return torch.nn.functional.one_hot(rank, scores.shape[-1])[..., :k].to(scores.dtype)


@pytest.mark.parametrize("k", [1, 4, 7])
def test_matches_full_sort_formula(k):
    scores = torch.randn(4, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = dense_reference(scores, k, 0.7)
    torch.testing.assert_close(rank_matrix(scores, k, 0.7), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 6, 11])
def test_hard_limit(n):
    generator = torch.Generator().manual_seed(n)
    scores = torch.stack([torch.randperm(n, generator=generator) for _ in range(3)]).double() * 0.5
    k = max(1, n - 1)
    torch.testing.assert_close(rank_matrix(scores, k, 1e3), hard_ranks(scores, k), rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ranks_are_distributions_over_items(dtype):
    scores = torch.randn(5, 8, dtype=dtype, generator=torch.Generator().manual_seed(2))
    p = rank_matrix(scores, 8, 2.0)
    assert p.dtype == dtype and p.shape == (5, 8, 8)
    torch.testing.assert_close(p.sum(1), torch.ones(5, 8, dtype=dtype))


def test_item_ranks_is_the_row_of_the_item():
    scores = torch.randn(6, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    index = torch.tensor([0, 9, 3, 3, 5, 1])
    expected = rank_matrix(scores, 4, 1.5)[torch.arange(6), index]
    torch.testing.assert_close(item_ranks(scores, index, 4, 1.5), expected, rtol=0, atol=1e-6)


def test_gradcheck():
    scores = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    scores.requires_grad_()
    index = torch.tensor([2, 0])
    assert torch.autograd.gradcheck(lambda s: rank_matrix(s, 3, 0.8), (scores,))
    assert torch.autograd.gradcheck(lambda s: item_ranks(s, index, 3, 0.8), (scores,))


@pytest.mark.parametrize("k", [1, 3, 6])
def test_agrees_with_difftopk(k):
    difftopk = pytest.importorskip("difftopk")
    scores = torch.randn(4, 6, generator=torch.Generator().manual_seed(5))
    original = difftopk.SoftSort(tau=0.5)(-scores).transpose(-2, -1)  # [B, item, rank], ascending ranks
    torch.testing.assert_close(rank_matrix(scores, k, 2.0), original.flip(-1)[:, :, :k], rtol=0, atol=1e-5)


@st.composite
def problems(draw):
    batch = draw(st.integers(1, 4))
    n = draw(st.integers(1, 12))
    k = draw(st.integers(1, n))
    values = draw(st.lists(st.floats(-100, 100, width=32), min_size=batch * n, max_size=batch * n))
    beta = draw(st.sampled_from([0.01, 1.0, 100.0]))
    index = draw(st.lists(st.integers(0, n - 1), min_size=batch, max_size=batch))
    return torch.tensor(values).view(batch, n), k, beta, torch.tensor(index)


@settings(max_examples=40, deadline=None)
@given(problems())
def test_shapes_and_ranges(problem):
    scores, k, beta, index = problem
    p = rank_matrix(scores, k, beta)
    row = item_ranks(scores, index, k, beta)
    assert p.shape == (*scores.shape, k) and row.shape == (scores.shape[0], k)
    for out in (p, row):
        assert out.dtype == scores.dtype and torch.isfinite(out).all()
        assert (out >= 0).all() and (out <= 1 + 1e-6).all()


@pytest.mark.parametrize("scores", [
    torch.tensor([[1.0, 1.0, 2.0, 2.0, 0.5]]),
    torch.full((2, 4), 3.0),
    torch.randn(3, 12, generator=torch.Generator().manual_seed(6)) * 1e4,
])
def test_ties_and_large_scores_are_finite(scores):
    scores = scores.clone().requires_grad_()
    p = rank_matrix(scores, scores.shape[-1], 10.0)
    p[..., 0].sum().backward()
    assert torch.isfinite(p).all() and torch.isfinite(scores.grad).all()
    torch.testing.assert_close(p.sum(1), torch.ones(p.shape[0], p.shape[-1]))
