from __future__ import annotations

import math

import pytest
import torch

from softtopk.relax.sinkhorn import item_ranks, rank_matrix

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # e.g. no convergence


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


def test_implicit_gradient_equals_unrolled_autograd():
    scores = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    weights = torch.randn(2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ours, reference = scores.clone().requires_grad_(), scores.clone().requires_grad_()
    (rank_matrix(ours, 6, 10.0) * weights).sum().backward()
    (dense_sinkhorn(reference, 10.0) * weights).sum().backward()
    torch.testing.assert_close(ours.grad, reference.grad, rtol=0, atol=1e-6)


def test_gradcheck_with_masked_items():
    scores = torch.randn(2, 6, dtype=torch.float64)
    scores[0, 1] = scores[1, 4] = scores[1, 5] = -torch.inf
    scores.requires_grad_()
    index = torch.tensor([[0, 2], [1, 3]])
    torch.autograd.gradcheck(lambda s: rank_matrix(s, 4, 2.0), (scores,))
    torch.autograd.gradcheck(lambda s: item_ranks(s, index, 4, 2.0, log=True), (scores,))


def test_masked_items_are_removed_exactly():
    """A row with n' real items gives the n' x n' result of those items; ranks >= n' belong to the
    masked items, in equal shares; masked items get zero gradient."""
    generator = torch.Generator().manual_seed(5)
    real = torch.randn(1, 5, dtype=torch.float64, generator=generator)
    gap, tail = torch.full((1, 1), -torch.inf), torch.full((1, 2), -torch.inf)
    scores = torch.cat([real[:, :2], gap, real[:, 2:], tail], 1)
    scores = torch.cat([scores, torch.randn(1, 8, dtype=torch.float64, generator=generator)]).requires_grad_()
    p = rank_matrix(scores, 7, 10.0)
    kept = [0, 1, 3, 4, 5]
    torch.testing.assert_close(p[:1, kept, :5], rank_matrix(real, 5, 10.0), rtol=0, atol=1e-8)
    assert (p[0, kept, 5:] == 0).all() and (p[0, [2, 6, 7], :5] == 0).all()
    torch.testing.assert_close(p[0, [2, 6, 7], 5:], torch.full((3, 2), 1 / 3, dtype=torch.float64))
    torch.testing.assert_close(p[1], rank_matrix(scores[1:].detach(), 7, 10.0)[0])  # rows are independent
    (p * torch.randn(p.shape, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(scores.grad).all() and (scores.grad[0, [2, 6, 7]] == 0).all()


@pytest.mark.parametrize("scale", [0.0, 1e-6])
def test_gradient_at_constant_rows_is_bounded(scale):
    """All-equal and nearly equal logits: the spread floor keeps the loss's gradient within 100x
    (measured: 6x) of its norm at randn logits."""
    import softtopk

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 20, generator=generator)
    target = torch.randint(0, 20, (8,), generator=generator)
    loss = softtopk.TopKCrossEntropyLoss([0.5, 0, 0, 0, 0.5], "sinkhorn")

    def gradient_norm(x):
        x = x.clone().requires_grad_()
        loss(x, target).backward()
        return x.grad.norm()

    assert gradient_norm(logits * scale) < 100 * gradient_norm(logits)


def test_squash_is_unchanged_above_the_spread_floor():
    from softtopk.relax.sinkhorn import SPREAD_FLOOR, squash

    scores = torch.randn(3, 10, dtype=torch.float64)
    scores = scores / scores.std(-1, unbiased=False, keepdim=True) * 2 * SPREAD_FLOOR
    real = torch.ones_like(scores, dtype=torch.bool)
    expected = torch.sigmoid((scores - scores.mean(-1, keepdim=True)) / (2 * SPREAD_FLOOR))
    torch.testing.assert_close(squash(scores, real, torch.full((3, 1), 10.0, dtype=torch.float64)), expected)
