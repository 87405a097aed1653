"""The entropic transport solver shared by SinkhornSort and OT top-k: marginals, masked items and
anchors, the implicit gradient against unrolled autograd, the iteration cap, torch.compile."""

from __future__ import annotations

import math
import os
import shutil

import pytest
import torch
from compiled import assert_compiles_like_eager

from softtopk.relax import transport
from softtopk.relax.transport import entropic_transport

BETA = 20.0


def problem(batch: int = 3, n: int = 7, masses=(1, 1, 1, 4), seed: int = 0):
    """A cost [B, n, m] of squared distances, uniform items and anchors of the given masses."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, n, generator=g, dtype=torch.float64)
    y = torch.linspace(1, 0, len(masses), dtype=torch.float64)
    cost = (x[:, :, None] - y).square()
    log_a = torch.full((batch, n), -math.log(n), dtype=torch.float64)
    log_b = torch.log(torch.tensor(masses, dtype=torch.float64) / sum(masses)).expand(batch, -1)
    return cost, log_a, log_b.contiguous()


def unrolled(cost, log_a, log_b, beta, iterations=4000):
    """Plain log-domain Sinkhorn under autograd (the reference for values and gradients)."""
    alpha, gamma = torch.zeros_like(log_a), torch.zeros_like(log_b)
    for _ in range(iterations):
        alpha = log_a - torch.logsumexp(gamma[:, None, :] - beta * cost, -1)
        gamma = torch.where(log_b > -math.inf, log_b - torch.logsumexp(alpha[:, :, None] - beta * cost, -2),
                            -math.inf)
    return alpha, gamma


def log_plan(alpha, gamma, cost, beta):
    return alpha[:, :, None] + gamma[:, None, :] - beta * cost


def some_loss(log_g: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Reads the plan both as probabilities and as logarithms (the loss's exact mode)."""
    finite = torch.where(log_g > -math.inf, log_g, 0.0)
    return (log_g.exp() * weights).sum() + (finite[:, :3, :2] * weights[:, :3, :2]).sum()


@pytest.mark.parametrize("masses", [(1, 1, 1, 4), (1,) * 7, (2, 5)])
def test_marginals_within_tolerance(masses):
    cost, log_a, log_b = problem(masses=masses)
    for beta in (1.0, 50.0, 2000.0):
        g = log_plan(*entropic_transport(cost, log_a, log_b, beta), cost, beta).exp()
        torch.testing.assert_close(g.sum(-1), log_a.exp(), rtol=1e-12, atol=0)  # rows: exact
        torch.testing.assert_close(g.sum(-2), log_b.exp(), rtol=1e-9, atol=0)  # columns: the tolerance


def test_float32_marginals():
    cost, log_a, log_b = (t.float() for t in problem())
    g = log_plan(*entropic_transport(cost, log_a, log_b, BETA), cost, BETA).exp()
    torch.testing.assert_close(g.sum(-2), log_b.exp(), rtol=1e-4, atol=0)


def test_values_and_implicit_gradient_equal_unrolled_autograd():
    cost, log_a, log_b = problem()
    weights = torch.randn(cost.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = cost.clone().requires_grad_()
    reference = cost.clone().requires_grad_()
    loss = some_loss(log_plan(*entropic_transport(ours, log_a, log_b, BETA), ours, BETA), weights)
    expected = some_loss(log_plan(*unrolled(reference, log_a, log_b, BETA), reference, BETA), weights)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(ours.grad, reference.grad, rtol=0, atol=1e-6)


def test_gradcheck():
    cost, log_a, log_b = problem(batch=2, n=5)
    weights = torch.randn(cost.shape, dtype=torch.float64)
    cost.requires_grad_()
    torch.autograd.gradcheck(
        lambda c: some_loss(log_plan(*entropic_transport(c, log_a, log_b, 3.0), c, 3.0), weights), (cost,)
    )


def test_masked_items_and_anchors_are_removed_exactly():
    """Zero marginals give the solution of the problem without those rows and columns, no NaN,
    and zero gradient on their costs."""
    cost, log_a, log_b = problem(batch=1, n=6, masses=(1, 1, 4))
    big = torch.cat([cost, torch.rand(1, 2, 3, dtype=torch.float64)], 1)  # two masked items
    big = torch.cat([big, torch.rand(1, 8, 1, dtype=torch.float64)], 2).requires_grad_()  # a masked anchor
    log_a_big = torch.cat([log_a, torch.full((1, 2), -math.inf, dtype=torch.float64)], 1)
    log_b_big = torch.cat([log_b, torch.full((1, 1), -math.inf, dtype=torch.float64)], 1)
    alpha, gamma = entropic_transport(big, log_a_big, log_b_big, BETA)
    assert (alpha[:, 6:] == -math.inf).all() and (gamma[:, 3:] == -math.inf).all()
    log_g = log_plan(alpha, gamma, big, BETA)
    expected = log_plan(*entropic_transport(cost, log_a, log_b, BETA), cost, BETA)
    torch.testing.assert_close(log_g[:, :6, :3], expected, rtol=0, atol=1e-9)
    some_loss(log_g, torch.randn(big.shape, dtype=torch.float64)).backward()
    assert torch.isfinite(big.grad).all()
    assert (big.grad[:, 6:] == 0).all() and (big.grad[:, :, 3:] == 0).all()


def test_warns_at_the_iteration_cap(monkeypatch):
    monkeypatch.setattr(transport, "MAX_ITERATIONS", 3)
    with pytest.warns(RuntimeWarning, match="did not converge in 3 iterations"):
        entropic_transport(*problem(), BETA)


NO_COMPILER = shutil.which(os.environ.get("CXX", "g++")) is None


@pytest.mark.skipif(NO_COMPILER, reason="inductor's CPU backend needs a C++ compiler")
def test_compiles_with_fullgraph():
    cost, log_a, log_b = problem(batch=2, n=5)
    weights = torch.randn(cost.shape, dtype=torch.float64)

    def loss(c):
        return some_loss(log_plan(*entropic_transport(c, log_a, log_b, BETA), c, BETA), weights)

    assert_compiles_like_eager(loss, cost)
