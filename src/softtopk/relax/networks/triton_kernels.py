"""The Triton kernels of the sorting networks: one launch runs every layer forward, one runs every
layer back (launched by `triton_launch.py`, their maths in `triton_maths.py`).

Program layout: program `p` owns the batch columns `[p * BLOCK_B, (p + 1) * BLOCK_B)` of the state
`[n, C, B]` and runs the whole network on them; programs never share a column, so they need no
synchronisation. The state lives in a scratch buffer in global memory (L1/L2-resident: a program's
columns of a small network are a few kB), by wire; rank r is read from wire n-1-r. A layer is a
tile `[WIDTH, BLOCK_B]` of comparators x columns: the comparators' min and max wires come from a
table (built once per network and device), and each element loads its two wires, mixes them and
stores them back, first the values (and mask) channels, which decide the swap, then the mass
channels one at a time with the same swap. Comparators of a layer are disjoint, so its loads and
stores never overlap; a barrier separates layers.

The one-item path of the loss (`triton_launch.ItemRanks`) dispatches nothing around its two launches
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

import torch
import triton
import triton.language as tl

from .triton_maths import argument, log_cdf_and_hazard, logaddexp, swap_and_slope

INTERPRETED = triton.knobs.runtime.interpret
"""Whether the kernels were built for Triton's interpreter (TRITON_INTERPRET=1 when this module was
first imported), which runs them on CPU tensors."""

FLOOR: tl.constexpr = tl.constexpr(torch.finfo(torch.float32).min)


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
