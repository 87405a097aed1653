"""The comparator distributions: symmetry, slopes, and the log-domain forms of the exact loss."""

from __future__ import annotations

import pytest
import torch

from softtopk.relax.networks.sigmoids import DISTRIBUTIONS, SIGMOIDS

MODERATE = torch.linspace(-6, 6, 241, dtype=torch.float64)
# Far tails whose log F is still representable in float32 (the Gaussian's is about -u^2 / 2).
EXTREME = torch.tensor([-1e15, -1e8, -1e4, -50.0, 50.0, 1e4, 1e8, 1e15], dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(SIGMOIDS))
def test_symmetric_monotone_cdf(name):
    s = SIGMOIDS[name]
    f = s.cdf(MODERATE)
    torch.testing.assert_close(f + s.cdf(-MODERATE), torch.ones_like(f), atol=1e-12, rtol=0)
    assert (f.diff() >= 0).all() and (f > 0).all() and (f < 1).all()


@pytest.mark.parametrize("name", sorted(SIGMOIDS))
def test_density_is_the_derivative(name):
    s = SIGMOIDS[name]
    u = MODERATE.clone().requires_grad_()
    (grad,) = torch.autograd.grad(s.cdf(u).sum(), u)
    torch.testing.assert_close(s.density(MODERATE, s.cdf(MODERATE)), grad, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("name", sorted(SIGMOIDS))
def test_log_cdf_and_hazard_agree_with_the_cdf(name):
    s = SIGMOIDS[name]
    f = s.cdf(MODERATE)
    torch.testing.assert_close(s.log_cdf(MODERATE), f.log(), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(s.hazard(MODERATE), s.density(MODERATE, f) / f, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(SIGMOIDS))
def test_log_forms_stay_finite_where_the_cdf_underflows(name, dtype):
    s = SIGMOIDS[name]
    u = EXTREME.to(dtype)
    log_f, hazard = s.log_cdf(u), s.hazard(u)
    assert torch.isfinite(log_f).all() and (log_f <= 0).all()
    assert (log_f.diff() >= 0).all()  # log F is non-decreasing
    assert torch.isfinite(hazard).all() and (hazard >= 0).all()
    assert (hazard[:4] > 0).all()  # the lower tail keeps a slope even where F(u) is 0 in float


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_log_swap_slopes_are_derivatives(name):
    dist = DISTRIBUTIONS[name]
    d = torch.linspace(-3, 3, 61, dtype=torch.float64)
    d = d[d.abs() > 1e-3]  # the trick's |d| is not differentiable at 0
    x = d.clone().requires_grad_()
    log_swap, log_stay, slope_swap, slope_stay = dist.log_swap(d, 1.7, 0.4)
    expected_swap, expected_stay, *_ = dist.log_swap(x, 1.7, 0.4)
    (g_swap,) = torch.autograd.grad(expected_swap.sum(), x, retain_graph=True)
    (g_stay,) = torch.autograd.grad(expected_stay.sum(), x)
    torch.testing.assert_close(slope_swap, g_swap, atol=1e-8, rtol=1e-7)
    torch.testing.assert_close(slope_stay, g_stay, atol=1e-8, rtol=1e-7)
    swap, slope = dist.swap_and_slope(d, 1.7, 0.4)
    torch.testing.assert_close(log_swap.exp(), swap, atol=1e-9, rtol=0)
    torch.testing.assert_close(slope, swap * slope_swap, atol=1e-9, rtol=1e-7)
