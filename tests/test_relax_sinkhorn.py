from __future__ import annotations

import math

import pytest
import torch

from softtopk.relax.sinkhorn import rank_matrix


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


def test_warns_when_it_stops_at_the_iteration_cap():
    from softtopk import rank_probabilities

    scores = torch.randn(2, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match="did not converge"):
        rank_probabilities(scores, 5, "sinkhorn", inverse_temperature=1e5)
