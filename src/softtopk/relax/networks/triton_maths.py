"""The float32 elementwise maths of the Triton kernels: the comparator sigmoids of `sigmoids.py`,
their log-CDFs and hazards, and the comparator argument, from +, *, /, exp and log alone, so that
Triton's interpreter runs the same code. Only Triton's builtins are used, none of its library functions
(tl.sum, tl.zeros_like): those are compiled or interpreted as TRITON_INTERPRET was when triton was first
imported, and the interpreter runs a reduction with a custom combine function element by element.

The kernels take a sigmoid as its number in `sigmoids.SIGMOIDS` (`SIGMOID_NUMBERS`); a sigmoid added
there needs its branches here, and the kernel tests run every one.
"""

from __future__ import annotations

import math

import triton
import triton.language as tl

from .sigmoids import _ART_EPS, SIGMOIDS

SIGMOID_NUMBERS = {name: number for number, name in enumerate(SIGMOIDS)}
"""The kernels' SIGMOID argument of each sigmoid of `sigmoids.SIGMOIDS`, by name."""

LOGISTIC: tl.constexpr = tl.constexpr(SIGMOID_NUMBERS["logistic"])
CAUCHY: tl.constexpr = tl.constexpr(SIGMOID_NUMBERS["cauchy"])
GAUSSIAN: tl.constexpr = tl.constexpr(SIGMOID_NUMBERS["gaussian"])
RECIPROCAL: tl.constexpr = tl.constexpr(SIGMOID_NUMBERS["reciprocal"])
OPTIMAL: tl.constexpr = tl.constexpr(SIGMOID_NUMBERS["optimal"])

ART_EPS: tl.constexpr = tl.constexpr(_ART_EPS)
PI: tl.constexpr = tl.constexpr(math.pi)
LOG_SQRT_2PI: tl.constexpr = tl.constexpr(0.5 * math.log(2 * math.pi))


@triton.jit
def log1p(x):
    """log(1 + x), accurate for small x (the rounding error of 1 + x is divided out)."""
    y = 1 + x
    z = y - 1
    return tl.where(y == 1, x, tl.where(z == x, tl.log(y), tl.log(y) * (x / z)))


@triton.jit
def logaddexp(a, b):
    top = tl.maximum(a, b)
    gap = tl.where(top == -float("inf"), 0.0, tl.abs(a - b))
    return top + log1p(tl.exp(-gap))


@triton.jit
def atan(x):
    """arctan by reduction to |r| <= tan(pi/8) and an odd polynomial (Cephes' atanf coefficients)."""
    a = tl.abs(x)
    big = a > 2.414213562373095  # tan(3 pi / 8)
    mid = a > 0.4142135623730950  # tan(pi / 8)
    r = tl.where(big, -1 / a, tl.where(mid, (a - 1) / (a + 1), a))
    base = tl.where(big, PI / 2, tl.where(mid, PI / 4, 0.0))
    z = r * r
    poly = (((8.05374449538e-2 * z - 1.38776856032e-1) * z + 1.99777106478e-1) * z - 3.33329491539e-1) * z
    return tl.where(x < 0, -1.0, 1.0) * (base + r + r * poly)


@triton.jit
def gaussian_log_tail(u):
    """log Phi(-|u|), from erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2), z = |u| / sqrt 2
    (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7)."""
    z = tl.abs(u) * 0.7071067811865476
    t = 1 / (1 + 0.5 * z)
    p = 0.17087277 * t - 0.82215223
    p = p * t + 1.48851587
    p = p * t - 1.13520398
    p = p * t + 0.27886807
    p = p * t - 0.18628806
    p = p * t + 0.09678418
    p = p * t + 0.37409196
    p = p * t + 1.00002368
    p = p * t - 1.26551223
    return tl.log(0.5 * t) - z * z + p


@triton.jit
def argument(d, beta, lam, PHI: tl.constexpr):
    """u(d) and du/dd: -beta d, or -beta d / (|d| + eps)^lam for the activation replacement trick."""
    if PHI:
        t = tl.abs(d) + ART_EPS
        scale = tl.exp2(-lam * tl.log2(t)) * -beta
        du = scale * (lam * ART_EPS / t + (1 - lam))
        u = d * scale
    else:
        u = d * -beta
        du = tl.full(d.shape, 0.0, tl.float32) - beta
    return u, du


@triton.jit
def swap_and_slope(d, beta, lam, SIGMOID: tl.constexpr, PHI: tl.constexpr):
    """sigma = F(u(d)) and d sigma / dd, for the sigmoid numbered SIGMOID (`SIGMOID_NUMBERS`)."""
    u, du = argument(d, beta, lam, PHI)
    if SIGMOID == LOGISTIC:
        s = 1 / (1 + tl.exp(-u))
        density = s * (1 - s)
    elif SIGMOID == CAUCHY:
        s = atan(u) / PI + 0.5
        density = 1 / (PI * (1 + u * u))
    elif SIGMOID == GAUSSIAN:
        tail = tl.exp(gaussian_log_tail(u))
        s = tl.where(u < 0, tail, 1 - tail)
        density = tl.exp(-0.5 * u * u - LOG_SQRT_2PI)
    elif SIGMOID == RECIPROCAL:
        a = tl.abs(u)
        s = 0.5 * (u / (2 + a) + 1)
        density = 1 / ((2 + a) * (2 + a))
    else:  # OPTIMAL
        a = tl.abs(u)
        sign = tl.where(u > 0, 1.0, tl.where(u < 0, -1.0, 0.0))
        s = 0.5 + sign * tl.where(a <= 0.25, a, 0.5 - 1 / (16 * a + ART_EPS))
        density = tl.where(a <= 0.25, 1.0, 1 / (16 * u * u + ART_EPS))
    return s, density * du


@triton.jit
def log_cdf_and_hazard(u, SIGMOID: tl.constexpr):
    """log F(u) and F'(u) / F(u), finite for every finite u."""
    a = tl.abs(u)
    if SIGMOID == LOGISTIC:
        log_cdf = tl.minimum(u, 0.0) - log1p(tl.exp(-a))
        hazard = 1 / (1 + tl.exp(u))
    elif SIGMOID == CAUCHY:
        tail = atan(1 / a) / PI  # F(-|u|)
        log_cdf = tl.where(u < 0, tl.log(tail), log1p(-tail))
        hazard = 1 / (PI * (1 + u * u) * tl.where(u < 0, tail, 1 - tail))
    elif SIGMOID == GAUSSIAN:
        log_tail = gaussian_log_tail(u)
        log_cdf = tl.where(u < 0, log_tail, log1p(-tl.exp(log_tail)))
        hazard = tl.exp(-0.5 * u * u - LOG_SQRT_2PI - log_cdf)
    elif SIGMOID == RECIPROCAL:
        log_cdf = tl.where(u < 0, 0.0, log1p(a)) - tl.log(2 + a)
        hazard = 1 / tl.where(u < 0, 2 + a, (2 + a) * (1 + a))
    else:  # OPTIMAL
        outer = tl.where(u < 0, -tl.log(16 * a), log1p(-1 / (16 * a)))
        log_cdf = tl.where(a <= 0.25, tl.log(0.5 + u), outer)
        hazard = 1 / tl.where(a <= 0.25, 0.5 + u, tl.where(u < 0, a, a * (16 * a - 1)))
    return log_cdf, hazard
