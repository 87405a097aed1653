from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from softtopk.relax.sinkhorn import item_ranks, rank_matrix


def dense_sinkhorn(scores: torch.Tensor, inverse_temperature: float, iterations: int = 3000) -> torch.Tensor:
    """Plain log-domain Sinkhorn with a fixed iteration count: n * plan as [B, n(item), n(rank)]."""
    n = scores.shape[-1]
    std = scores.std(-1, unbiased=False, keepdim=True)
    x = torch.sigmoid((scores - scores.mean(-1, keepdim=True)) / std)
    anchors = 1 - torch.arange(n, dtype=scores.dtype) / max(n - 1, 1)
    log_kernel = -inverse_temperature * (x[:, :, None] - anchors[None, None, :]) ** 2
    log_a = torch.full_like(scores, -math.log(n))
    f = torch.zeros_like(scores)
    g = torch.zeros_like(scores)
    for _ in range(iterations):
        f = log_a - torch.logsumexp(log_kernel + g[:, None, :], dim=2)
        g = log_a - torch.logsumexp(log_kernel + f[:, :, None], dim=1)
    return n * torch.exp(log_kernel + f[:, :, None] + g[:, None, :])


def hard_ranks(scores: torch.Tensor, k: int) -> torch.Tensor:
    """One-hot ranks (0 = largest) of tie-free scores, [B, n, k]."""
    rank = scores.argsort(-1, descending=True).argsort(-1)
    return torch.nn.functional.one_hot(rank, scores.shape[-1])[..., :k].to(scores.dtype)


@pytest.mark.parametrize("beta", [1.0, 10.0, 40.0])
def test_matches_dense_sinkhorn(beta):
    scores = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    torch.testing.assert_close(rank_matrix(scores, 7, beta), dense_sinkhorn(scores, beta), rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_hard_limit(n):
    generator = torch.Generator().manual_seed(n)
    scores = torch.stack([torch.randperm(n, generator=generator) for _ in range(3)]).double()
    torch.testing.assert_close(rank_matrix(scores, n, 1e4), hard_ranks(scores, n), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_doubly_stochastic(dtype):
    scores = torch.randn(5, 9, dtype=dtype, generator=torch.Generator().manual_seed(1))
    p = rank_matrix(scores, 9, 20.0)
    assert p.dtype == dtype and p.shape == (5, 9, 9)
    tolerance = 1e-8 if dtype == torch.float64 else 1e-4
    ones = torch.ones(5, 9, dtype=dtype)
    torch.testing.assert_close(p.sum(1), ones, rtol=0, atol=tolerance)
    torch.testing.assert_close(p.sum(2), ones, rtol=0, atol=tolerance)


def test_permutation_equivariance():
    generator = torch.Generator().manual_seed(2)
    scores = torch.randn(2, 8, dtype=torch.float64, generator=generator)
    perm = torch.randperm(8, generator=generator)
    torch.testing.assert_close(rank_matrix(scores[:, perm], 5, 10.0), rank_matrix(scores, 5, 10.0)[:, perm])


def test_single_item_has_rank_zero():
    scores = torch.tensor([[3.0], [-1.0]], requires_grad=True)
    p = rank_matrix(scores, 1, 5.0)
    p.sum().backward()
    torch.testing.assert_close(p, torch.ones(2, 1, 1))
    assert torch.isfinite(scores.grad).all()


def test_item_ranks_is_the_row_of_the_item():
    scores = torch.randn(6, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    index = torch.tensor([0, 9, 3, 3, 5, 1])
    expected = rank_matrix(scores, 4, 15.0)[torch.arange(6), index]
    torch.testing.assert_close(item_ranks(scores, index, 4, 15.0), expected, rtol=0, atol=1e-6)


def test_gradcheck():
    scores = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    scores.requires_grad_()
    index = torch.tensor([2, 0])
    assert torch.autograd.gradcheck(lambda s: rank_matrix(s, 3, 5.0), (scores,))
    assert torch.autograd.gradcheck(lambda s: item_ranks(s, index, 3, 5.0), (scores,))


@st.composite
def problems(draw):
    batch = draw(st.integers(1, 4))
    n = draw(st.integers(1, 12))
    k = draw(st.integers(1, n))
    values = draw(st.lists(st.floats(-100, 100, width=32), min_size=batch * n, max_size=batch * n))
    beta = draw(st.sampled_from([0.01, 1.0, 100.0]))
    index = draw(st.lists(st.integers(0, n - 1), min_size=batch, max_size=batch))
    return torch.tensor(values).view(batch, n), k, beta, torch.tensor(index)


@settings(max_examples=30, deadline=None)
@given(problems())
def test_shapes_and_ranges(problem):
    scores, k, beta, index = problem
    p = rank_matrix(scores, k, beta)
    row = item_ranks(scores, index, k, beta)
    assert p.shape == (*scores.shape, k) and row.shape == (scores.shape[0], k)
    for out in (p, row):
        assert out.dtype == scores.dtype and torch.isfinite(out).all()
        assert (out >= 0).all() and (out <= 1 + 1e-3).all()


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
    ones = torch.ones(p.shape[0], p.shape[-1])
    torch.testing.assert_close(p.sum(1), ones, rtol=0, atol=1e-4)
    torch.testing.assert_close(p.sum(2), ones, rtol=0, atol=1e-4)


def test_warns_when_it_stops_at_the_iteration_cap():
    from softtopk import rank_probabilities

    scores = torch.randn(2, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match="did not converge"):
        rank_probabilities(scores, 5, "sinkhorn", inverse_temperature=1e5)
