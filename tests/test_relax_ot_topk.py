"""OT top-k: agreement with a plain unrolled Sinkhorn on K + 1 anchors (values and gradients),
marginals, its relation to SinkhornSort, masked items, gradcheck."""

from __future__ import annotations

import math

import pytest
import torch

from softtopk.relax import ot_topk, sinkhorn

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # e.g. no convergence


def unrolled_ot_topk(scores: torch.Tensor, k: int, beta: float, iterations: int = 4000) -> torch.Tensor:
    """n * plan [B, n, k] of the K rank anchors 1 - r/(n-1) and the bucket at (n-1-K)/(2(n-1)),
    masses 1/n and (n-K)/n, plain log-domain Sinkhorn under autograd."""
    n = scores.shape[-1]
    std = scores.std(-1, unbiased=False, keepdim=True)
    x = torch.sigmoid((scores - scores.mean(-1, keepdim=True)) / std)
    positions = [1 - r / (n - 1) for r in range(k)] + [(n - 1 - k) / (2 * (n - 1))]
    anchors = torch.tensor(positions, dtype=scores.dtype)
    log_kernel = -beta * (x[:, :, None] - anchors) ** 2
    log_a = torch.full_like(scores, -math.log(n))
    log_b = torch.log(torch.tensor([1.0] * k + [n - k], dtype=scores.dtype) / n)
    f, g = torch.zeros_like(scores), torch.zeros(scores.shape[0], k + 1, dtype=scores.dtype)
    for _ in range(iterations):
        f = log_a - torch.logsumexp(log_kernel + g[:, None, :], dim=2)
        g = log_b - torch.logsumexp(log_kernel + f[:, :, None], dim=1)
    return n * torch.exp(log_kernel + f[:, :, None] + g[:, None, :])[:, :, :k]


def scores_64(batch: int, n: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("n", "k", "beta"), [(8, 3, 5.0), (12, 5, 40.0), (6, 1, 2.0)])
def test_values_and_gradient_equal_unrolled_sinkhorn(n, k, beta):
    scores = scores_64(3, n, seed=n)
    weights = scores_64(3, n * k, seed=n + 1).reshape(3, n, k)
    ours, reference = scores.clone().requires_grad_(), scores.clone().requires_grad_()
    p = ot_topk.rank_matrix(ours, k, beta)
    expected = unrolled_ot_topk(reference, k, beta)
    torch.testing.assert_close(p, expected, rtol=0, atol=1e-9)
    (p * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(ours.grad, reference.grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("beta", [1.0, 30.0, 1000.0])
def test_marginals(beta):
    """Each rank holds one item (to the solver's tolerance); each item's rows sum to at most 1,
    and the rest, n - K items' worth, is the bucket."""
    p = ot_topk.rank_matrix(scores_64(4, 20, seed=2), 5, beta)
    torch.testing.assert_close(p.sum(1), torch.ones(4, 5, dtype=torch.float64), rtol=0, atol=1e-9)
    assert (p.sum(2) <= 1 + 1e-12).all()
    torch.testing.assert_close((1 - p.sum(2)).sum(1), torch.full((4,), 15.0, dtype=torch.float64))


@pytest.mark.parametrize("k", [6, 7])
def test_is_sinkhorn_sort_when_at_most_one_rank_is_left(k):
    scores = scores_64(3, 7, seed=3)
    torch.testing.assert_close(ot_topk.rank_matrix(scores, k, 20.0), sinkhorn.rank_matrix(scores, k, 20.0))


def test_large_inverse_temperature_gives_the_hard_top_k():
    generator = torch.Generator().manual_seed(6)
    scores = torch.stack([torch.randperm(30, generator=generator) for _ in range(3)]).double()
    p = ot_topk.rank_matrix(scores, 5, 1e5)
    order = scores.argsort(-1, descending=True)[:, :5]
    hard = torch.nn.functional.one_hot(order, 30).transpose(1, 2).double()
    torch.testing.assert_close(p, hard, rtol=0, atol=1e-6)


def test_masked_items_are_removed_exactly():
    real = scores_64(1, 9, seed=4)
    scores = torch.cat([real[:, :4], torch.full((1, 3), -torch.inf), real[:, 4:]], 1).requires_grad_()
    p = ot_topk.rank_matrix(scores, 4, 15.0)
    kept = [0, 1, 2, 3, 7, 8, 9, 10, 11]
    torch.testing.assert_close(p[:, kept], ot_topk.rank_matrix(real, 4, 15.0), rtol=0, atol=1e-9)
    assert (p[:, 4:7] == 0).all()
    p.square().sum().backward()
    assert torch.isfinite(scores.grad).all() and (scores.grad[:, 4:7] == 0).all()


def test_fewer_real_items_than_ranks():
    scores = torch.tensor([[0.3, -torch.inf, 1.2, -torch.inf, -torch.inf]], dtype=torch.float64)
    p = ot_topk.rank_matrix(scores, 4, 10.0)
    torch.testing.assert_close(p[0, [0, 2], :2], sinkhorn.rank_matrix(scores[:, [0, 2]], 2, 10.0)[0])
    assert (p[0, [0, 2], 2:] == 0).all() and (p[0, [1, 3, 4], :2] == 0).all()
    torch.testing.assert_close(p[0, [1, 3, 4], 2:], torch.full((3, 2), 1 / 3, dtype=torch.float64))


def test_gradcheck():
    scores = scores_64(2, 7, seed=5)
    scores[1, 3] = -torch.inf
    scores.requires_grad_()
    index = torch.tensor([[0, 6], [2, 5]])  # log P of a masked item is -inf
    torch.autograd.gradcheck(lambda s: ot_topk.rank_matrix(s, 3, 4.0), (scores,))
    torch.autograd.gradcheck(lambda s: ot_topk.item_ranks(s, index, 3, 4.0, log=True), (scores,))


def test_float32_at_a_large_inverse_temperature():
    """Potentials of size beta: float32 rounding of them left column errors of 1e-3 to 5e-2 here,
    so such problems are solved in float64 and returned in float32."""
    scores = torch.randn(4, 300, generator=torch.Generator().manual_seed(1))
    p = ot_topk.rank_matrix(scores, 5, 1e4)
    assert p.dtype == torch.float32
    torch.testing.assert_close(p.sum(1), torch.ones(4, 5), rtol=0, atol=1e-5)
