"""Comparator distributions of the differentiable sorting networks.

A relaxed comparator sees `d = x_hi - x_lo`, the value on the wire that should receive the
maximum minus the value on the wire that should receive the minimum, and swaps the two with
probability `sigma = F(u)`, `u = -beta * d`, for a sigmoid `F` with `F(-u) = 1 - F(u)`
('logistic_phi', the activation replacement trick, uses `u = -beta * d / (|d| + 1e-10)^lambda`).

Each distribution gives the swap probability and, for the backward pass, its slope
`d sigma / d d`; for the exact loss (`eps=0`) also `log sigma`, `log(1 - sigma)` and their slopes,
computed without forming `sigma`, so that they stay finite and informative where `sigma`
underflows. The slopes use `sigma` or the saved `u` of the forward pass where that saves work.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..._checks import eager_cpu

Tensor = torch.Tensor
_ART_EPS = 1e-10  # keeps |d|^lambda away from zero in the activation replacement trick
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class Sigmoid(NamedTuple):
    """A symmetric sigmoid `F` of the comparator argument `u`.

    `cdf(u) = F(u)`; `density(u, sigma) = F'(u)` (given `sigma = F(u)`); `log_cdf(u) = log F(u)` and
    `hazard(u) = F'(u) / F(u)`, both stable for every finite `u`.
    """

    cdf: Callable[[Tensor], Tensor]
    density: Callable[[Tensor, Tensor], Tensor]
    log_cdf: Callable[[Tensor], Tensor]
    hazard: Callable[[Tensor], Tensor]


def _tail_split(u: Tensor, tail: Tensor, log_tail: Tensor) -> Tensor:
    """log F(u) from the lower tail `F(-|u|)` and its log: `log tail` for u < 0, `log(1 - tail)` else."""
    return torch.where(u < 0, log_tail, torch.log1p(-tail))


def _cauchy_tail(u: Tensor) -> Tensor:
    return torch.atan(1 / u.abs()) / math.pi  # F(-|u|) = 1/2 - atan(|u|)/pi without cancellation


def _cauchy_log_cdf(u: Tensor) -> Tensor:
    tail = _cauchy_tail(u)
    return _tail_split(u, tail, tail.log())


def _cauchy_hazard(u: Tensor) -> Tensor:
    a = u.abs()
    t = 1 / a.clamp_min(1)  # in the far lower tail F'/F = t / ((1 + t^2) atan(t) / t), t = 1/|u|, no overflow
    far = t / ((1 + t * t) * (torch.atan(t) / t))
    near = 1 / ((1 + a * a) * torch.atan(1 / a))
    lower = torch.where(a >= 1, far, near)
    return torch.where(u < 0, lower, 1 / (math.pi * (1 + u * u) * (1 - _cauchy_tail(u))))


def _gaussian_log_density(u: Tensor) -> Tensor:
    return -0.5 * u * u - _LOG_SQRT_2PI


def _gaussian_hazard(u: Tensor) -> Tensor:
    """phi(u) / Phi(u); for u < -20 the inverse of the asymptotic series of Mills' ratio, where the
    exact form cancels: R(a) = (1 - b + 3 b^2 - 15 b^3 + 105 b^4) / a, a = -u, b = 1 / a^2."""
    a = (-u).clamp_min(20)
    b = 1 / (a * a)
    far = a / (1 - b * (1 - 3 * b * (1 - 5 * b * (1 - 7 * b))))
    exact = torch.exp(_gaussian_log_density(u) - torch.special.log_ndtr(u))
    return torch.where(u < -20, far, exact)


def _reciprocal_log_cdf(u: Tensor) -> Tensor:
    a = u.abs()
    return torch.where(u < 0, 0, torch.log1p(a)) - torch.log(2 + a)


def _reciprocal_hazard(u: Tensor) -> Tensor:
    a = u.abs()
    return 1 / torch.where(u < 0, 2 + a, (2 + a) * (1 + a))


def _optimal_cdf(u: Tensor) -> Tensor:
    a = u.abs()
    return 0.5 + torch.sign(u) * torch.where(a <= 0.25, a, 0.5 - 1 / (16 * a + _ART_EPS))


def _optimal_log_cdf(u: Tensor) -> Tensor:
    a = u.abs()
    outer = torch.where(u < 0, -torch.log(16 * a), torch.log1p(-1 / (16 * a)))
    return torch.where(a <= 0.25, torch.log(0.5 + u), outer)


def _optimal_hazard(u: Tensor) -> Tensor:
    a = u.abs()
    outer = torch.where(u < 0, a, a * (16 * a - 1))
    return 1 / torch.where(a <= 0.25, 0.5 + u, outer)


SIGMOIDS: dict[str, Sigmoid] = {
    "logistic": Sigmoid(
        torch.sigmoid, lambda u, s: torch.addcmul(s, s, s, value=-1),  # s (1 - s) in one op
        F.logsigmoid, lambda u: torch.sigmoid(-u)),
    "cauchy": Sigmoid(
        lambda u: torch.atan(u) / math.pi + 0.5, lambda u, s: 1 / (math.pi * (1 + u * u)),
        _cauchy_log_cdf, _cauchy_hazard),
    "gaussian": Sigmoid(
        lambda u: 0.5 * torch.erfc(u * -math.sqrt(0.5)), lambda u, s: torch.exp(_gaussian_log_density(u)),
        torch.special.log_ndtr, _gaussian_hazard),
    "reciprocal": Sigmoid(
        lambda u: 0.5 * (u / (2 + u.abs()) + 1), lambda u, s: 1 / (2 + u.abs()) ** 2,
        _reciprocal_log_cdf, _reciprocal_hazard),
    "optimal": Sigmoid(
        _optimal_cdf, lambda u, s: torch.where(u.abs() <= 0.25, 1.0, 1 / (16 * u * u + _ART_EPS)),
        _optimal_log_cdf, _optimal_hazard),
}


def _inverse_power(t: Tensor, lam: float) -> Tensor:
    """t^-lam; for the usual lam = 0.5 by rsqrt, for lam = 0.25 on the CPU by two square roots, about
    3x faster than pow there (elsewhere one op: one launch on a GPU)."""
    if lam == 0.5:
        return t.rsqrt()
    if lam == 0.25 and eager_cpu(t):
        return t.sqrt().rsqrt_()
    return t.pow(-lam)


class Distribution(NamedTuple):
    """A sigmoid and the map from `d` to its argument `u` (`phi`: the activation replacement trick)."""

    sigmoid: Sigmoid
    phi: bool  # the activation replacement trick

    def argument(self, d: Tensor, beta: float, lam: float,
                 slope: bool = True) -> tuple[Tensor, Tensor | float]:
        """`u` and, with `slope`, `du / dd` (a float for the plain argument, a tensor for the trick)."""
        if not self.phi:
            return d * -beta, -beta
        t = d.abs().add_(_ART_EPS)
        scale = _inverse_power(t, lam).mul_(-beta)
        if not slope:
            return d * scale, 0.0
        # du/dd = -beta t^-lam (1 - lam |d| / t) = -beta t^-lam ((1 - lam) + lam eps / t)
        return d * scale, torch.addcdiv(scale * (1 - lam), scale, t, value=lam * _ART_EPS)

    def swap(self, d: Tensor, beta: float, lam: float) -> Tensor:
        """sigma = F(u(d))."""
        return self.sigmoid.cdf(self.argument(d, beta, lam, slope=False)[0])

    def swap_and_slope(self, d: Tensor, beta: float, lam: float) -> tuple[Tensor, Tensor]:
        """sigma and d sigma / dd."""
        u, du = self.argument(d, beta, lam)
        sigma = self.sigmoid.cdf(u)
        return sigma, self.sigmoid.density(u, sigma) * du

    def log_swap(self, d: Tensor, beta: float, lam: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """log sigma, log(1 - sigma), d log sigma / dd and d log(1 - sigma) / dd."""
        u, du = self.argument(d, beta, lam)
        s = self.sigmoid
        return s.log_cdf(u), s.log_cdf(-u), s.hazard(u) * du, s.hazard(-u) * -du


DISTRIBUTIONS: dict[str, Distribution] = {
    **{name: Distribution(sigmoid, False) for name, sigmoid in SIGMOIDS.items()},
    "logistic_phi": Distribution(SIGMOIDS["logistic"], True),
}
