"""The Triton backend of the sorting networks: one launch runs every layer forward, one runs every
layer back. Its autograd Functions (`LinearNetwork`, `LogNetwork`, and `ItemRanks`, the loss's
one-item path) have the same interface as `torch_path`: `linear_network(state, key, ...)` and
`item_ranks(scores, index, key, ...)`, `key` = (kind, n, k); `backend.choose` sends float32 alone here.

Program layout: program `p` owns the batch columns `[p * BLOCK_B, (p + 1) * BLOCK_B)` of the state
`[n, C, B]` and runs the whole network on them; programs never share a column, so they need no
synchronisation. The state lives in a scratch buffer in global memory (L1/L2-resident: a program's
columns of a small network are a few kB), by wire; rank r is read from wire n-1-r. A layer is a
tile `[WIDTH, BLOCK_B]` of comparators x columns: the comparators' min and max wires come from a
table (built once per network and device), and each element loads its two wires, mixes them and
stores them back, first the values (and mask) channels, which decide the swap, then the mass
channels one at a time with the same swap. Comparators of a layer are disjoint, so its loads and
stores never overlap; a barrier separates layers.

The one-item path of the loss (`ItemRanks`) dispatches nothing around its two launches
but their buffers: the forward kernel builds the state itself from the scores and the items (values
with the masked items at 0, the mask, one mass channel per item) and writes P `[B, J, k]` where the
caller reads it; the backward kernel writes the scores' gradient `[B, n]`.

Saved, not recomputed: the backward of a layer needs the differences `d` of every linear channel
before it (and, for log masses, the masses before it), which only a re-run of the network up to
that layer could give back (O(layers^2) work, or checkpoints). The forward writes them once, with the
comparator's swap and slope, as one row per comparator and column `[T, S, B]` (T comparators); the
backward reads each row once. Both passes are coalesced along the batch, and the rows are small: at
the ImageNet-1K setting (splitter selection, 50 comparators, values + one mass channel, B = 500)
400 kB, next to one layer's latency negligible traffic. What is cheap to recompute from a saved row
is recomputed: the swap `exp(log swap)` and the total masses of the log network.

The kernel computes in float32 (its sigmoids are accurate to float32, from Triton's elementwise
maths only), so float64 states stay on the torch path.

Element (wire w, channel c, column b) of the working state `[n, C, B]` is at (w * C + c) * B + b;
slot s of comparator t's saved row `[T, S, B]` at (t * S + s) * B + b. The slots: d of the L linear
channels; then, for linear mass, d of the J mass channels, for log mass the J masses of the min wire
and the J of the max wire; then swap and slope (linear) or log swap, log stay, slope of log swap and
slope of log stay (log).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import triton
import triton.language as tl

from .layouts import top_ranks_network
from .sigmoids import _ART_EPS, DISTRIBUTIONS, SIGMOIDS, Distribution

Tensor = torch.Tensor
Key = tuple[str, int, int]

BLOCK_B = 32  # batch columns per program: 128 bytes of float32, one coalesced segment
NUM_WARPS = 4


SIGMOID_NUMBERS = {name: number for number, name in enumerate(SIGMOIDS)}
"""The kernels' SIGMOID argument of each sigmoid of `sigmoids.SIGMOIDS`, by name."""
_SIGMOID_NUMBERS = {SIGMOIDS[name]: number for name, number in SIGMOID_NUMBERS.items()}

LOGISTIC: tl.constexpr = tl.constexpr(SIGMOID_NUMBERS["logistic"])
CAUCHY: tl.constexpr = tl.constexpr(SIGMOID_NUMBERS["cauchy"])
GAUSSIAN: tl.constexpr = tl.constexpr(SIGMOID_NUMBERS["gaussian"])
RECIPROCAL: tl.constexpr = tl.constexpr(SIGMOID_NUMBERS["reciprocal"])
OPTIMAL: tl.constexpr = tl.constexpr(SIGMOID_NUMBERS["optimal"])

ART_EPS: tl.constexpr = tl.constexpr(_ART_EPS)
PI: tl.constexpr = tl.constexpr(math.pi)
LOG_SQRT_2PI: tl.constexpr = tl.constexpr(0.5 * math.log(2 * math.pi))


# ---------------------------------------------------------------------------------------------------
# Elementwise maths (float32) from +, *, /, exp and log alone, so that the interpreter runs the same
# code. The kernels use Triton's builtins only, none of its library functions (tl.sum, tl.zeros_like):
# those are compiled or interpreted as TRITON_INTERPRET was when triton was first imported, and the
# interpreter runs a reduction with a custom combine function element by element. A sigmoid added to
# `sigmoids.SIGMOIDS` needs its branches here, and the kernel tests run every one.


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


INTERPRETED = triton.knobs.runtime.interpret
"""Whether the kernels were built for Triton's interpreter (TRITON_INTERPRET=1 when this module was
first imported), which runs them on CPU tensors."""

FLOOR: tl.constexpr = tl.constexpr(torch.finfo(torch.float32).min)


# ---------------------------------------------------------------------------------------------------
# Kernels.


@triton.jit
def _columns(B, BLOCK_B: tl.constexpr):
    """This program's batch columns `[1, BLOCK_B]` (int64) and which of them exist."""
    cols = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    return cols.to(tl.int64)[None, :], (cols < B)[None, :]


@triton.jit
def _rows(p0, WIDTH: tl.constexpr):
    """Rows p0, ..., p0 + WIDTH - 1 as a column `[WIDTH, 1]` (int64)."""
    return (p0 + tl.arange(0, WIDTH)).to(tl.int64)[:, None]


@triton.jit
def _copy(dst, dst_sp, dst_sc, dst_sb, src, src_sp, src_sc, src_sb, rows, fill, channels, n, B,
          FLIP_SRC: tl.constexpr, FLIP_DST: tl.constexpr, WIDTH: tl.constexpr, BLOCK_B: tl.constexpr):
    """dst[p, c, b] = src[p, c, b] for p < rows, 0 for rows <= p < fill (c < channels), on this
    program's columns; a flipped side reads row p as row n - 1 - p (ranks from wires). Any strides."""
    cols, b_ok = _columns(B, BLOCK_B)
    for p0 in range(0, fill, WIDTH):
        p = _rows(p0, WIDTH)
        into = (p < fill) & b_ok
        src_row = n - 1 - p if FLIP_SRC else p
        dst_row = n - 1 - p if FLIP_DST else p
        for c in range(channels):
            x = tl.load(src + src_row * src_sp + c * src_sc + cols * src_sb, mask=into & (p < rows),
                        other=0.0)
            tl.store(dst + dst_row * dst_sp + c * dst_sc + cols * dst_sb, x, mask=into)


@triton.jit
def _start_from_scores(work, C, scores, s_sp, s_sb, items, i_sj, i_sb, n, J, B, LOG: tl.constexpr,
                       WIDTH: tl.constexpr, BLOCK_B: tl.constexpr):
    """The state of the one-item path from scores `[n, B]` and items `[J, B]` (any strides): on wire
    p the value (0 where masked), the mask, and per item j a mass of 1 (log: 0) if p is the item,
    else 0 (log: -inf)."""
    cols, b_ok = _columns(B, BLOCK_B)
    for p0 in range(0, n, WIDTH):
        p = _rows(p0, WIDTH)
        ok = (p < n) & b_ok
        x = tl.load(scores + p * s_sp + cols * s_sb, mask=ok, other=0.0)
        masked = x == -float("inf")
        at = work + p * C * B + cols
        tl.store(at, tl.where(masked, 0.0, x), mask=ok)
        tl.store(at + B, tl.where(masked, 1.0, 0.0), mask=ok)
        for j in range(J):
            hit = tl.load(items + j * i_sj + cols * i_sb, mask=b_ok, other=-1) == p
            mass = tl.where(hit, 0.0, -float("inf")) if LOG else tl.where(hit, 1.0, 0.0)
            tl.store(at + (2 + j) * B, mass, mask=ok)


@triton.jit
def _scores_gradient(grad_scores, g_sp, g_sb, grad, C, scores, s_sp, s_sb, n, B, WIDTH: tl.constexpr,
                     BLOCK_B: tl.constexpr):
    """grad_scores[p, b] = the values' gradient on wire p, 0 where the score is masked (any strides)."""
    cols, b_ok = _columns(B, BLOCK_B)
    for p0 in range(0, n, WIDTH):
        p = _rows(p0, WIDTH)
        ok = (p < n) & b_ok
        masked = tl.load(scores + p * s_sp + cols * s_sb, mask=ok, other=0.0) == -float("inf")
        g = tl.load(grad + p * C * B + cols, mask=ok, other=0.0)
        tl.store(grad_scores + p * g_sp + cols * g_sb, tl.where(masked, 0.0, g), mask=ok)


@triton.jit
def _layer_tile(pairs, starts, layer, C, S, B, WIDTH: tl.constexpr, BLOCK_B: tl.constexpr):
    """Layer `layer` as a tile `[WIDTH, BLOCK_B]` of comparators x columns: the offsets of channel 0
    of the min and max wires and of slot 0 of the saved rows, and which elements are real."""
    j = tl.arange(0, WIDTH)
    cols, b_ok = _columns(B, BLOCK_B)
    first = tl.load(starts + layer)
    j_ok = j < tl.load(starts + layer + 1) - first
    lo = tl.load(pairs + (2 * layer) * WIDTH + j, mask=j_ok, other=0).to(tl.int64)
    hi = tl.load(pairs + (2 * layer + 1) * WIDTH + j, mask=j_ok, other=0).to(tl.int64)
    ok = j_ok[:, None] & b_ok
    row = (first + j).to(tl.int64)[:, None] * S * B + cols
    return lo[:, None] * C * B + cols, hi[:, None] * C * B + cols, row, ok


@triton.jit
def forward_kernel(
    linear_in, lin_sp, lin_sc, lin_sb,  # the L linear channels `[n, L, B]`; FROM_SCORES: scores `[n, 1, B]`
    mass_in, mass_sp, mass_sc, mass_sb,  # the J (log) masses `[n, J, B]`; FROM_SCORES: items `[1, J, B]`
    work, saved, out_linear, out_lin_sp, out_mass, out_mass_sp, out_mass_sc, out_mass_sb,
    pairs, starts, n, k, J, B, layers, beta, lam,
    MASKED: tl.constexpr, LOG: tl.constexpr, SAVE: tl.constexpr, FROM_SCORES: tl.constexpr,
    SIGMOID: tl.constexpr, PHI: tl.constexpr, WIDTH: tl.constexpr, BLOCK_B: tl.constexpr,
):
    L: tl.constexpr = 2 if MASKED else 1
    SCALARS: tl.constexpr = 4 if LOG else 2
    C = L + J
    S = L + (2 * J if LOG else J) + SCALARS
    if FROM_SCORES:
        _start_from_scores(work, C, linear_in, lin_sp, lin_sb, mass_in, mass_sc, mass_sb, n, J, B, LOG,
                           WIDTH, BLOCK_B)
    else:
        _copy(work, C * B, B, 1, linear_in, lin_sp, lin_sc, lin_sb, n, n, L, n, B, False, False,
              WIDTH, BLOCK_B)
        _copy(work + L * B, C * B, B, 1, mass_in, mass_sp, mass_sc, mass_sb, n, n, J, n, B, False, False,
              WIDTH, BLOCK_B)
    tl.debug_barrier()
    for layer in range(layers):
        at_lo, at_hi, row, ok = _layer_tile(pairs, starts, layer, C, S, B, WIDTH, BLOCK_B)
        x_lo = tl.load(work + at_lo, mask=ok, other=0.0)
        x_hi = tl.load(work + at_hi, mask=ok, other=0.0)
        d = x_hi - x_lo
        if LOG:
            u, du = argument(d, beta, lam, PHI)
            log_swap, hazard_swap = log_cdf_and_hazard(u, SIGMOID)
            log_stay, hazard_stay = log_cdf_and_hazard(-u, SIGMOID)
            slope_swap = hazard_swap * du
            slope_stay = hazard_stay * -du
            swap = tl.exp(log_swap)
        else:
            swap, slope = swap_and_slope(d, beta, lam, SIGMOID, PHI)
        if MASKED:  # a masked min wire keeps its item (swap 0), else a masked max wire gives it away (swap 1)
            m_lo = tl.load(work + at_lo + B, mask=ok, other=0.0)
            m_hi = tl.load(work + at_hi + B, mask=ok, other=0.0)
            if LOG:
                low_masked = m_lo > 0
                free = (m_lo <= 0) & (m_hi <= 0)
                swap = tl.where(free, swap, tl.where(low_masked, 0.0, 1.0))
                log_swap = tl.where(free, log_swap, tl.where(low_masked, -float("inf"), 0.0))
                log_stay = tl.where(free, log_stay, tl.where(low_masked, 0.0, -float("inf")))
                slope_swap = tl.where(free, slope_swap, 0.0)
                slope_stay = tl.where(free, slope_stay, 0.0)
            else:
                free_low = 1 - m_lo
                swap = free_low * (swap + m_hi * (1 - swap))
                slope = slope * free_low * (1 - m_hi)
            d_mask = m_hi - m_lo
            tl.store(work + at_lo + B, m_lo + swap * d_mask, mask=ok)
            tl.store(work + at_hi + B, m_hi - swap * d_mask, mask=ok)
            if SAVE:
                tl.store(saved + row + B, d_mask, mask=ok)
        tl.store(work + at_lo, x_lo + swap * d, mask=ok)
        tl.store(work + at_hi, x_hi - swap * d, mask=ok)
        if SAVE:
            tl.store(saved + row, d, mask=ok)
            scalars = saved + row + (S - SCALARS) * B
            if LOG:
                tl.store(scalars, log_swap, mask=ok)
                tl.store(scalars + B, log_stay, mask=ok)
                tl.store(scalars + 2 * B, slope_swap, mask=ok)
                tl.store(scalars + 3 * B, slope_stay, mask=ok)
            else:
                tl.store(scalars, swap, mask=ok)
                tl.store(scalars + B, slope, mask=ok)
        for c in range(L, C):  # the mass channels, one at a time
            v_lo = tl.load(work + at_lo + c * B, mask=ok, other=0.0)
            v_hi = tl.load(work + at_hi + c * B, mask=ok, other=0.0)
            if LOG:
                tl.store(work + at_lo + c * B, logaddexp(v_lo + log_stay, v_hi + log_swap), mask=ok)
                tl.store(work + at_hi + c * B, logaddexp(v_lo + log_swap, v_hi + log_stay), mask=ok)
                if SAVE:
                    tl.store(saved + row + c * B, v_lo, mask=ok)
                    tl.store(saved + row + (c + J) * B, v_hi, mask=ok)
            else:
                dm = v_hi - v_lo
                tl.store(work + at_lo + c * B, v_lo + swap * dm, mask=ok)
                tl.store(work + at_hi + c * B, v_hi - swap * dm, mask=ok)
                if SAVE:
                    tl.store(saved + row + c * B, dm, mask=ok)
        tl.debug_barrier()
    # rank r = wire n - 1 - r; the one-item path returns the masses alone
    if not FROM_SCORES:
        _copy(out_linear, out_lin_sp, B, 1, work, C * B, B, 1, k, k, L, n, B, True, False, WIDTH, BLOCK_B)
    _copy(out_mass, out_mass_sp, out_mass_sc, out_mass_sb, work + L * B, C * B, B, 1, k, k, J, n, B,
          True, False, WIDTH, BLOCK_B)


@triton.jit
def backward_kernel(
    grad_linear, gl_sp, gl_sc, gl_sb,  # [k, L, B], any strides (FROM_SCORES: not read, zero)
    grad_mass, gm_sp, gm_sc, gm_sb,  # [k, J, B], any strides
    grad, saved,  # [n, C, B] (the result; FROM_SCORES: scratch), [T, S, B]
    scores, sc_sp, sc_sb, grad_scores, gs_sp, gs_sb,  # FROM_SCORES: the scores and their gradient `[n, B]`
    pairs, starts, n, k, J, B, layers,
    MASKED: tl.constexpr, LOG: tl.constexpr, FROM_SCORES: tl.constexpr, WIDTH: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    L: tl.constexpr = 2 if MASKED else 1
    SCALARS: tl.constexpr = 4 if LOG else 2
    C = L + J
    S = L + (2 * J if LOG else J) + SCALARS
    # rank r = wire n - 1 - r
    _copy(grad, C * B, B, 1, grad_linear, gl_sp, gl_sc, gl_sb, 0 if FROM_SCORES else k, n, L, n, B,
          False, True, WIDTH, BLOCK_B)
    _copy(grad + L * B, C * B, B, 1, grad_mass, gm_sp, gm_sc, gm_sb, k, n, J, n, B, False, True,
          WIDTH, BLOCK_B)
    tl.debug_barrier()
    for step in range(layers):
        at_lo, at_hi, row, ok = _layer_tile(pairs, starts, layers - 1 - step, C, S, B, WIDTH, BLOCK_B)
        scalars = saved + row + (S - SCALARS) * B
        if LOG:
            log_swap = tl.load(scalars, mask=ok, other=0.0)
            log_stay = tl.load(scalars + B, mask=ok, other=0.0)
            slope_swap = tl.load(scalars + 2 * B, mask=ok, other=0.0)
            slope_stay = tl.load(scalars + 3 * B, mask=ok, other=0.0)
            swap = tl.exp(log_swap)
            slope = swap * slope_swap  # d swap = swap d log swap
        else:
            swap = tl.load(scalars, mask=ok, other=0.0)
            slope = tl.load(scalars + B, mask=ok, other=0.0)
        # The mass channels: their new gradient, and what they add to dL/dd of the values.
        mass_swap = tl.full(swap.shape, 0.0, tl.float32)
        mass_stay = tl.full(swap.shape, 0.0, tl.float32)
        for c in range(L, C):
            g_lo = tl.load(grad + at_lo + c * B, mask=ok, other=0.0)
            g_hi = tl.load(grad + at_hi + c * B, mask=ok, other=0.0)
            if LOG:  # each path weighs by its share of the total it flows into
                v_lo = tl.load(saved + row + c * B, mask=ok, other=0.0)
                v_hi = tl.load(saved + row + (c + J) * B, mask=ok, other=0.0)
                total_lo = tl.maximum(logaddexp(v_lo + log_stay, v_hi + log_swap), FLOOR)
                total_hi = tl.maximum(logaddexp(v_lo + log_swap, v_hi + log_stay), FLOOR)
                low_stays = g_lo * tl.exp(v_lo + log_stay - total_lo)
                high_swaps = g_lo * tl.exp(v_hi + log_swap - total_lo)
                low_swaps = g_hi * tl.exp(v_lo + log_swap - total_hi)
                high_stays = g_hi * tl.exp(v_hi + log_stay - total_hi)
                mass_swap += high_swaps + low_swaps
                mass_stay += low_stays + high_stays
                tl.store(grad + at_lo + c * B, low_stays + low_swaps, mask=ok)
                tl.store(grad + at_hi + c * B, high_swaps + high_stays, mask=ok)
            else:
                spread = g_lo - g_hi
                mass_swap += spread * tl.load(saved + row + c * B, mask=ok, other=0.0)
                spread = spread * swap
                tl.store(grad + at_lo + c * B, g_lo - spread, mask=ok)
                tl.store(grad + at_hi + c * B, g_hi + spread, mask=ok)
        # The linear channels: lo += swap d, hi -= swap d with swap a function of the values' d.
        g_lo = tl.load(grad + at_lo, mask=ok, other=0.0)
        g_hi = tl.load(grad + at_hi, mask=ok, other=0.0)
        spread = g_lo - g_hi
        d_swap = spread * tl.load(saved + row, mask=ok, other=0.0)
        if MASKED:
            h_lo = tl.load(grad + at_lo + B, mask=ok, other=0.0)
            h_hi = tl.load(grad + at_hi + B, mask=ok, other=0.0)
            spread_mask = h_lo - h_hi
            d_swap += spread_mask * tl.load(saved + row + B, mask=ok, other=0.0)
            spread_mask = spread_mask * swap
            tl.store(grad + at_lo + B, h_lo - spread_mask, mask=ok)
            tl.store(grad + at_hi + B, h_hi + spread_mask, mask=ok)
        if LOG:
            spread = spread * swap + d_swap * slope + (mass_swap * slope_swap + mass_stay * slope_stay)
        else:
            spread = spread * swap + (d_swap + mass_swap) * slope
        tl.store(grad + at_lo, g_lo - spread, mask=ok)
        tl.store(grad + at_hi, g_hi + spread, mask=ok)
        tl.debug_barrier()
    if FROM_SCORES:
        _scores_gradient(grad_scores, gs_sp, gs_sb, grad, C, scores, sc_sp, sc_sb, n, B, WIDTH, BLOCK_B)


# ---------------------------------------------------------------------------------------------------
# Tables, launches and the autograd Functions.


@dataclass(frozen=True)
class _Tables:
    """A network laid out for the kernel: `pairs[l, 0, j]` and `pairs[l, 1, j]` are the min and max
    wires of comparator j of layer l (0 past the layer's end), `starts[l]` the index of layer l's
    first comparator among all T (`starts[-1] = T`), `width` a power of two >= every layer."""

    pairs: Tensor  # [layers, 2, width] int32
    starts: Tensor  # [layers + 1] int32
    width: int
    comparators: int
    layers: int


@lru_cache(maxsize=256)
def _tables(kind: str, n: int, k: int, device: torch.device) -> _Tables:
    network = top_ranks_network(kind, n, k)
    width = triton.next_power_of_2(max((len(layer) for layer in network), default=1))
    padding = [0] * width
    pairs = [[([lo for lo, _ in layer] + padding)[:width], ([hi for _, hi in layer] + padding)[:width]]
             for layer in network] or [[padding, padding]]
    starts = [0]
    for layer in network:
        starts.append(starts[-1] + len(layer))
    return _Tables(torch.tensor(pairs, dtype=torch.int32, device=device),
                   torch.tensor(starts, dtype=torch.int32, device=device), width, starts[-1], len(network))


def _sigmoid_number(dist: Distribution) -> int:
    if dist.sigmoid not in _SIGMOID_NUMBERS:
        raise ValueError(f"the Triton backend knows the sigmoids of {', '.join(DISTRIBUTIONS)}; got {dist}")
    return _SIGMOID_NUMBERS[dist.sigmoid]


def _forward(ctx, linear: Tensor, mass: Tensor, out_linear: Tensor, out_mass: Tensor, key: Key,
             dist: Distribution, beta: float, lam: float, masked: bool, log: bool,
             from_scores: bool = False) -> Tensor | None:
    """One launch over every layer. `linear [n, L, B]` and `mass [n, J, B]` start the state, or, with
    `from_scores`, the scores `[n, 1, B]` and the items `[1, J, B]` do (`out_linear` is then not
    written). Returns the buffer of the saved rows, which the working state shares, where a gradient
    is needed."""
    kind, n, k = key
    batch, mass_channels = linear.shape[2], mass.shape[1]
    lin = 2 if from_scores else linear.shape[1]
    tables = _tables(kind, n, k, linear.device)
    save = any(ctx.needs_input_grad[:2])
    slots = lin + (2 if log else 1) * mass_channels + (4 if log else 2)
    state_size = n * (lin + mass_channels) * batch
    buffer = linear.new_empty(state_size + (tables.comparators * slots * batch if save else 0))
    forward_kernel[(triton.cdiv(batch, BLOCK_B),)](
        linear_in=linear, lin_sp=linear.stride(0), lin_sc=linear.stride(1), lin_sb=linear.stride(2),
        mass_in=mass, mass_sp=mass.stride(0), mass_sc=mass.stride(1), mass_sb=mass.stride(2),
        work=buffer, saved=buffer[state_size:],
        out_linear=out_linear, out_lin_sp=out_linear.stride(0),
        out_mass=out_mass, out_mass_sp=out_mass.stride(0), out_mass_sc=out_mass.stride(1),
        out_mass_sb=out_mass.stride(2),
        pairs=tables.pairs, starts=tables.starts, n=n, k=k, J=mass_channels, B=batch, layers=tables.layers,
        beta=float(beta), lam=float(lam),
        MASKED=masked, LOG=log, SAVE=save, FROM_SCORES=from_scores, SIGMOID=_sigmoid_number(dist),
        PHI=dist.phi, WIDTH=tables.width, BLOCK_B=BLOCK_B, num_warps=NUM_WARPS,
    )
    ctx.tables, ctx.n, ctx.masked, ctx.log, ctx.saved_at = tables, n, masked, log, state_size
    return buffer if save else None


def _backward(ctx, grad_linear: Tensor, grad_mass: Tensor, buffer: Tensor, values: Tensor | None = None
              ) -> Tensor:
    """dL/d(state) `[n, C, B]` from the outputs' gradients `[k, L, B]` and `[k, J, B]`; with the
    `values [n, 1, B]` (the scores) of the one-item path, dL/d(scores) `[B, n]` from the masses'
    gradient alone. The working gradient and the result share one buffer."""
    tables, k, batch, n = ctx.tables, grad_mass.shape[0], grad_mass.shape[2], ctx.n
    from_scores = values is not None
    channels = (2 if from_scores else grad_linear.shape[1]) + grad_mass.shape[1]
    state_size = n * channels * batch
    out = grad_mass.new_empty(state_size + (n * batch if from_scores else 0))
    grad = out[:state_size].view(n, channels, batch)
    result = out[state_size:].view(batch, n) if from_scores else grad
    scores = values if from_scores else grad  # read only from_scores
    backward_kernel[(triton.cdiv(batch, BLOCK_B),)](
        grad_linear=grad_linear, gl_sp=grad_linear.stride(0), gl_sc=grad_linear.stride(1),
        gl_sb=grad_linear.stride(2),
        grad_mass=grad_mass, gm_sp=grad_mass.stride(0), gm_sc=grad_mass.stride(1), gm_sb=grad_mass.stride(2),
        grad=grad, saved=buffer[ctx.saved_at:],
        scores=scores, sc_sp=scores.stride(0), sc_sb=scores.stride(-1),
        grad_scores=result, gs_sp=result.stride(-1), gs_sb=result.stride(0),
        pairs=tables.pairs, starts=tables.starts, n=n, k=k, J=grad_mass.shape[1], B=batch,
        layers=tables.layers,
        MASKED=ctx.masked, LOG=ctx.log, FROM_SCORES=from_scores, WIDTH=tables.width, BLOCK_B=BLOCK_B,
        num_warps=NUM_WARPS,
    )
    return result


class LinearNetwork(torch.autograd.Function):
    """state `[n, C, B]` -> the state on the wires of ranks 0..k-1, `[k, C, B]`, as
    `torch_path.LinearNetwork` computes it."""

    @staticmethod
    def forward(ctx, state: Tensor, key: Key, dist: Distribution, beta: float, lam: float,
                masked: bool) -> Tensor:
        lin = 2 if masked else 1
        out = state.new_empty(key[2], state.shape[1], state.shape[2])
        buffer = _forward(ctx, state[:, :lin], state[:, lin:], out[:, :lin], out[:, lin:], key, dist, beta,
                          lam, masked, log=False)
        if buffer is not None:
            ctx.save_for_backward(buffer)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        lin = 2 if ctx.masked else 1
        grad = _backward(ctx, grad_out[:, :lin], grad_out[:, lin:], *ctx.saved_tensors)
        return grad, None, None, None, None, None


class LogNetwork(torch.autograd.Function):
    """Linear channels `[n, L, B]` and log masses `[n, J, B]` -> both on the wires of ranks 0..k-1,
    `[k, L, B]` and `[k, J, B]`, as `torch_path.LogNetwork` computes them."""

    @staticmethod
    def forward(ctx, linear: Tensor, log_mass: Tensor, key: Key, dist: Distribution, beta: float,
                lam: float, masked: bool) -> tuple[Tensor, Tensor]:
        k, batch = key[2], linear.shape[2]
        out_linear = linear.new_empty(k, linear.shape[1], batch)
        out_mass = log_mass.new_empty(k, log_mass.shape[1], batch)
        buffer = _forward(ctx, linear, log_mass, out_linear, out_mass, key, dist, beta, lam, masked, log=True)
        if buffer is not None:
            ctx.save_for_backward(buffer)
        return out_linear, out_mass

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_linear: Tensor, grad_log: Tensor):
        grad = _backward(ctx, grad_linear, grad_log, *ctx.saved_tensors)
        lin = grad_linear.shape[1]
        return grad[:, :lin], grad[:, lin:], None, None, None, None, None


class ItemRanks(torch.autograd.Function):
    """The one-item path in one launch each way: scores `[B, n]` and items `[B, J]` -> P (or log P)
    of each item's ranks 0..k-1 `[B, J, k]`, as `torch_path.item_ranks` computes it; the kernel
    builds the state itself (masked items always handled) and writes the gradient of the scores."""

    @staticmethod
    def forward(ctx, scores: Tensor, index: Tensor, key: Key, dist: Distribution, beta: float, lam: float,
                log: bool) -> Tensor:
        out = scores.new_empty(index.shape[0], index.shape[1], key[2])
        buffer = _forward(ctx, scores.t().unsqueeze(1), index.t().unsqueeze(0), out, out.permute(2, 1, 0),
                          key, dist, beta, lam, masked=True, log=log, from_scores=True)
        if buffer is not None:
            ctx.save_for_backward(buffer, scores)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        buffer, scores = ctx.saved_tensors
        grad_mass = grad_out.permute(2, 1, 0)  # [k, J, B]; no gradient reaches the linear channels
        grad = _backward(ctx, grad_mass, grad_mass, buffer, scores.t().unsqueeze(1))
        return grad, None, None, None, None, None, None


def linear_network(state: Tensor, key: Key, dist: Distribution, beta: float, lam: float,
                   masked: bool) -> Tensor:
    """state `[n, C, B]` -> the state on the wires of ranks 0..k-1 `[k, C, B]`, in one launch each way."""
    return LinearNetwork.apply(state, key, dist, beta, lam, masked)


def item_ranks(scores: Tensor, index: Tensor, key: Key, dist: Distribution, beta: float, lam: float,
               log: bool) -> Tensor:
    """P[b, index[b, j], r] for r < k (log P with `log`), in one launch each way.
    [B, n], [B, J] -> [B, J, k]"""
    return ItemRanks.apply(scores, index, key, dist, beta, lam, log)
