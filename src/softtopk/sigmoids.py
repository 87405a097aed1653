"""Comparator distributions of the differentiable sorting networks.

A relaxed comparator sees `d = x_hi - x_lo`, the value on the wire that should receive the
maximum minus the value on the wire that should receive the minimum, and swaps the two with
probability `sigma = f(-beta * d)` for a sigmoid `f` with `f(-x) = 1 - f(x)`. Each distribution
gives `sigma` and its slope `d sigma / d d`; the slope is evaluated only in the backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

Tensor = torch.Tensor
_ART_EPS = 1e-10  # keeps |d|^lambda away from zero in the activation replacement trick


class Distribution(NamedTuple):
    """`swap(d, beta, lam) -> sigma` and `slope(d, sigma, beta, lam) -> d sigma / d d`."""

    swap: Callable[[Tensor, float, float], Tensor]
    slope: Callable[[Tensor, Tensor, float, float], Tensor]


def _logistic_swap(d: Tensor, beta: float, lam: float) -> Tensor:
    return torch.sigmoid(d * -beta)


def _logistic_slope(d: Tensor, sigma: Tensor, beta: float, lam: float) -> Tensor:
    return sigma * (sigma - 1) * beta


def _phi_swap(d: Tensor, beta: float, lam: float) -> Tensor:
    return torch.sigmoid(d * -beta / (d.abs() + _ART_EPS) ** lam)


def _phi_slope(d: Tensor, sigma: Tensor, beta: float, lam: float) -> Tensor:
    t = d.abs() + _ART_EPS
    du_dd = (t - lam * d.abs()) * t ** (-lam - 1) * -beta
    return sigma * (1 - sigma) * du_dd


def _cauchy_swap(d: Tensor, beta: float, lam: float) -> Tensor:
    return torch.atan(d * -beta) / math.pi + 0.5


def _cauchy_slope(d: Tensor, sigma: Tensor, beta: float, lam: float) -> Tensor:
    return -beta / math.pi / (1 + (d * beta) ** 2)


def _gaussian_swap(d: Tensor, beta: float, lam: float) -> Tensor:
    return 0.5 * torch.erfc(d * (beta / math.sqrt(2)))


def _gaussian_slope(d: Tensor, sigma: Tensor, beta: float, lam: float) -> Tensor:
    return torch.exp(-0.5 * (d * beta) ** 2) * (-beta / math.sqrt(2 * math.pi))


def _reciprocal_swap(d: Tensor, beta: float, lam: float) -> Tensor:
    u = d * -beta
    return 0.5 * (u / (2 + u.abs()) + 1)


def _reciprocal_slope(d: Tensor, sigma: Tensor, beta: float, lam: float) -> Tensor:
    return -beta / (2 + (d * beta).abs()) ** 2


def _optimal_swap(d: Tensor, beta: float, lam: float) -> Tensor:
    u = d * -beta
    a = u.abs()
    return 0.5 + torch.sign(u) * torch.where(a <= 0.25, a, 0.5 - 1 / (16 * a + _ART_EPS))


def _optimal_slope(d: Tensor, sigma: Tensor, beta: float, lam: float) -> Tensor:
    a = (d * beta).abs()
    return torch.where(a <= 0.25, 1.0, 1 / (16 * a * a + _ART_EPS)) * -beta


DISTRIBUTIONS: dict[str, Distribution] = {
    "logistic": Distribution(_logistic_swap, _logistic_slope),
    "logistic_phi": Distribution(_phi_swap, _phi_slope),
    "cauchy": Distribution(_cauchy_swap, _cauchy_slope),
    "gaussian": Distribution(_gaussian_swap, _gaussian_slope),
    "reciprocal": Distribution(_reciprocal_swap, _reciprocal_slope),
    "optimal": Distribution(_optimal_swap, _optimal_slope),
}
