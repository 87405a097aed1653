"""LapSum: closed-form thresholds against bisection, the membership sums, stochasticity, the hard
limit, masked items, the stable log path and gradients."""

from __future__ import annotations

import math
import os
import shutil

import pytest
import torch
from compiled import assert_compiles_like_eager

from softtopk import rank_probabilities
from softtopk.relax import lapsum


def laplace_cdf(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0, 0.5 * torch.exp(x.clamp(max=0)), 1 - 0.5 * torch.exp(-x.clamp(min=0)))


def bisection_thresholds(x: torch.Tensor, k: int, steps: int = 200) -> torch.Tensor:
    """t_1..t_k with sum_i F(x_i - t) = k, by bisection.  [B, n] -> [B, k]"""
    wanted = torch.arange(1, k + 1, dtype=x.dtype)
    low = (x.amin(-1, keepdim=True) - 50).expand(-1, k).clone()
    high = (x.amax(-1, keepdim=True) + 50).expand(-1, k).clone()
    for _ in range(steps):
        mid = (low + high) / 2
        too_many = laplace_cdf(x[:, :, None] - mid[:, None, :]).sum(1) > wanted
        low, high = torch.where(too_many, mid, low), torch.where(too_many, high, mid)
    return (low + high) / 2


def thresholds(x: torch.Tensor, k: int) -> torch.Tensor:
    return lapsum._thresholds_forward(x, k)[0]


def scores_64(batch: int, n: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("n", "scale"), [(6, 1.0), (40, 3.0), (200, 0.1), (12, 30.0)])
def test_thresholds_equal_bisection(n, scale):
    x = scores_64(4, n, seed=n) * scale
    x[0, :3] = x[0, 3]  # ties
    k = min(n - 1, 9)
    t = thresholds(x, k)
    # 1e-9 absolute; relative 1e-10 where a threshold sits in a wide gap between the items, where
    # the sum is flat and either computation only knows t to rounding / slope.
    torch.testing.assert_close(t, bisection_thresholds(x, k), rtol=1e-10, atol=1e-9)
    sums = laplace_cdf(x[:, :, None] - t[:, None, :]).sum(1)
    wanted = torch.arange(1.0, k + 1, dtype=torch.float64).expand(4, -1)
    torch.testing.assert_close(sums, wanted, rtol=0, atol=1e-9)


def test_rank_matrix_equals_memberships_from_bisection():
    scores = scores_64(3, 15, seed=8)
    x = 2.5 * scores
    t = torch.nn.functional.pad(bisection_thresholds(x, 14), (1, 1), value=math.inf)
    t[:, -1] = -math.inf
    membership = laplace_cdf(x[:, :, None] - t[:, None, :])  # m_i(0..n)
    expected = membership[:, :, 1:] - membership[:, :, :-1]
    torch.testing.assert_close(lapsum.rank_matrix(scores, 15, 2.5), expected, rtol=0, atol=1e-9)
    index = torch.tensor([[0], [7], [14]])
    log_p = lapsum.item_ranks(scores, index, 6, 2.5, log=True)
    torch.testing.assert_close(log_p.exp(), expected.gather(1, index[:, :, None].expand(-1, -1, 15))[..., :6])


def test_threshold_of_every_item_is_minus_infinity():
    assert (thresholds(scores_64(2, 5, seed=1), 5)[:, 4] == -math.inf).all()


def test_rows_and_columns_sum_to_one_for_k_equal_n():
    p = lapsum.rank_matrix(scores_64(3, 11, seed=2), 11, 1.7)
    ones = torch.ones(3, 11, dtype=torch.float64)
    torch.testing.assert_close(p.sum(1), ones, rtol=0, atol=1e-12)
    torch.testing.assert_close(p.sum(2), ones, rtol=0, atol=1e-12)
    assert (p >= 0).all()


def test_large_inverse_temperature_gives_the_hard_top_k():
    scores = scores_64(3, 50, seed=3)
    p = lapsum.rank_matrix(scores, 5, 1e5)
    order = scores.argsort(-1, descending=True)[:, :5]
    hard = torch.nn.functional.one_hot(order, 50).transpose(1, 2).double()
    torch.testing.assert_close(p, hard, rtol=0, atol=1e-9)


def test_masked_items_are_removed_exactly():
    real = scores_64(1, 7, seed=4)
    scores = torch.cat([torch.full((1, 2), -torch.inf, dtype=torch.float64), real], 1).requires_grad_()
    p = lapsum.rank_matrix(scores, 9, 2.0)
    torch.testing.assert_close(p[:, 2:, :7], lapsum.rank_matrix(real, 7, 2.0), rtol=0, atol=1e-12)
    assert (p[:, 2:, 7:] == 0).all() and (p[:, :2, :7] == 0).all()
    torch.testing.assert_close(p[:, :2, 7:], torch.full((1, 2, 2), 0.5, dtype=torch.float64))
    (p * scores_64(1, 81, seed=5).reshape(1, 9, 9)).sum().backward()
    assert torch.isfinite(scores.grad).all() and (scores.grad[:, :2] == 0).all()


def test_log_path_is_finite_and_exact_where_probabilities_underflow():
    """float32 scores 1e3 apart: P underflows, log P matches the float64 result and keeps a gradient
    that pushes a last-ranked item up."""
    scores = torch.tensor([[0.0, 1e3, 2e3, 3e3, 4e3]])
    index = torch.tensor([[0]])
    log_p = lapsum.item_ranks(scores.double(), index, 3, 1.0, log=True)
    assert torch.isfinite(log_p).all() and (log_p < -1000).all()
    x = scores.clone().requires_grad_()
    ours = lapsum.item_ranks(x, index, 3, 1.0, log=True)
    torch.testing.assert_close(ours.double(), log_p, rtol=1e-6, atol=0)
    assert (lapsum.item_ranks(scores, index, 3, 1.0) == 0).all()
    ours.logsumexp(-1).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[0, 0] > 0


def test_log_cdf_difference_against_direct_formula():
    high = torch.tensor([-3.0, -1e-9, 0.5, 2.0, 40.0, math.inf, 1.0, -0.2], dtype=torch.float64)
    low = torch.tensor([-5.0, -2e-9, -0.5, 1.0, 39.0, 3.0, -math.inf, -0.2], dtype=torch.float64)
    expected = torch.log(laplace_cdf(high) - laplace_cdf(low))
    expected[4] = math.log(0.5) - 39 + math.log(-math.expm1(-1.0))  # the direct formula rounds to 0 there
    torch.testing.assert_close(lapsum._log_cdf_difference(high, low), expected, rtol=1e-7, atol=0)


def test_gradcheck():
    scores = scores_64(2, 8, seed=6)
    scores[0, 0] = scores[0, 1]  # a tie
    scores[1, 5] = -torch.inf
    scores.requires_grad_()
    index = torch.tensor([[0, 7], [2, 3]])
    torch.autograd.gradcheck(lambda s: lapsum.rank_matrix(s, 4, 1.5), (scores,))
    torch.autograd.gradcheck(lambda s: lapsum.item_ranks(s, index, 5, 0.7, log=True), (scores,))
    torch.autograd.gradcheck(lambda s: lapsum.rank_matrix(s, 8, 0.7), (scores,))


NEEDS_COMPILER = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                                    reason="needs a C++ compiler")


@NEEDS_COMPILER
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiles_with_fullgraph(dtype):
    """The items' gradient and the rank matrix's in one graph, with a masked item."""
    scores = scores_64(3, 9, seed=7).to(dtype)
    scores[0, 4] = -torch.inf
    index = torch.tensor([[0], [3], [8]])

    def loss(s):
        log_p = lapsum.item_ranks(s, index, 3, 1.5, log=True)
        return log_p.sum() + lapsum.rank_matrix(s, 3, 1.5).square().sum()

    assert_compiles_like_eager(loss, scores)


@NEEDS_COMPILER
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("batch", "n"), [(4, 8), (2, 12)])
def test_rank_probabilities_compile_with_many_ranks(dtype, batch, n):
    """k = 5 ranks of n = 8 or 12 items: the 2k top items, whose own gradients the backward places,
    are the whole row or all but two items."""
    scores = scores_64(batch, n, seed=8).to(dtype)
    weights = scores_64(batch, n * 5, seed=9).to(dtype).view(batch, n, 5)
    assert_compiles_like_eager(lambda s: (rank_probabilities(s, 5, "lapsum") * weights).sum(), scores)
