"""LapSum soft top-k (Struski, Bednarczyk, Podolak, Tabor, ICML 2025): with F the Laplace CDF,
F(x) = e^x / 2 for x <= 0 and 1 - e^-x / 2 for x > 0, the soft membership of item i in the top k is

    m_i(k) = F(beta (s_i - b_k)),   b_k such that sum_i m_i(k) = k,   m_i(0) = 0,

and P[i, r] = m_i(r + 1) - m_i(r): every column of P sums to 1 and, for k = n, every row.

Thresholds in closed form (x = beta s, t = beta b, one `topk` and log-sum-exp prefix sums): with
x_(1) >= ... >= x_(n) and p items above t, sum_i F(x_i - t) = p - e^t A_p / 2 + e^-t B_p / 2,
A_p = sum_{j <= p} e^-x_(j), B_p = sum_{j > p} e^x_(j), so z = e^t solves A z^2 + 2 (k - p) z - B = 0.
Each of the p items contributes more than 1/2, so p <= 2k: only the 2K largest items are sorted,
the others enter through one log-sum-exp. p is the number of q with sum_i F(x_i - x_(q)) <= k.

Backward, by the implicit function theorem on sum_i F(x_i - t_k) = k:
dt_k / dx_i = F'(x_i - t_k) / sum_j F'(x_j - t_k) = softmax_i(-|x_i - t_k|). Every item below all
thresholds gets e^x_i times one per-row sum; only the 2K largest need their own weights, so the
backward is one pass over the row. log P is a log-difference of Laplace CDFs computed without
cancellation, finite with a gradient where P underflows.

Masked items (-inf) take no part: with n' real items, m_i(k) = 1 for real items and k >= n', and
the masked items share the ranks r >= n' equally (the limit of equal scores going to -inf).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .relaxation import Relaxation, from_log_ranks, masked_log_ranks

LOG_HALF = -math.log(2)


def _closed_form(k: Tensor, p: Tensor, log_a: Tensor, log_b: Tensor) -> Tensor:
    """log z of the positive root of A z^2 + 2 (k - p) z - B = 0, from log A and log B."""
    c = k - p
    log_c = torch.log(c.abs())
    root = 0.5 * torch.logaddexp(2 * log_c, log_a + log_b)  # log sqrt(c^2 + A B)
    above = log_b - torch.logaddexp(log_c, root)  # c >= 0: z = B / (c + sqrt(c^2 + AB))
    below = torch.logaddexp(log_c, root) - log_a  # c < 0: z = (|c| + sqrt(c^2 + AB)) / A
    return torch.where(c >= 0, above, below)


def _thresholds_forward(x: Tensor, k: int, last: bool = False
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """t_1..t_k `[B, k]` (only t_k `[B, 1]` with `last`; -inf for k' >= n'), min(n', L) `[B, 1]` with
    L = min(2k, n) (exact where
    n' < L), and for the backward the L largest items, their positions and the log-sum-exp of the
    others. x `[B, n]`, -inf for masked items."""
    n = x.shape[-1]
    length = min(2 * k, n)
    top, top_index = x.topk(length, dim=-1)  # descending; masked items last
    real_top = top > -math.inf
    count = real_top.sum(-1, keepdim=True)
    # log sum of e^x over the other items, relative to the smallest top item: every top item adds
    # exactly 1 (clamped). Rounding is relative to that item's e^x, which every B_q with q < L holds.
    reference = top[:, -1:].clamp(min=torch.finfo(x.dtype).min)
    others = (x - reference).clamp_(max=0.0).exp_().sum(-1, keepdim=True) - count
    tail = reference + others.clamp_(min=0.0).log_()  # [B, 1]
    none = torch.full_like(tail, -math.inf)
    log_a = torch.logcumsumexp((-top).masked_fill(~real_top, -math.inf), -1)  # A_q, q = 1..L
    suffix = torch.logcumsumexp(top.flip(-1), -1).flip(-1)  # sum_{j >= q} over the top items
    log_b = torch.logaddexp(torch.cat([suffix[:, 1:], none], -1), tail)  # B_q
    safe_top = top.masked_fill(~real_top, 0.0)
    position = torch.arange(length, dtype=x.dtype, device=x.device)  # q - 1
    before = torch.exp(safe_top + torch.cat([none, log_a[:, :-1]], -1))  # e^x_(q) A_{q-1}
    level = position + 0.5 - 0.5 * before + 0.5 * torch.exp(log_b - safe_top)
    level = level.masked_fill(~real_top, math.inf)  # sum_i F(x_i - x_(q)), non-decreasing in q
    wanted = torch.arange(k if last else 1, k + 1, dtype=x.dtype, device=x.device)
    wanted = wanted.expand(x.shape[0], -1).contiguous()
    p = torch.searchsorted(level, wanted, right=True)  # [B, k or 1]: items above t_k
    log_a_p = torch.cat([none, log_a], -1).gather(-1, p)
    log_b_p = torch.cat([torch.logaddexp(suffix[:, :1], tail), log_b], -1).gather(-1, p)
    t = _closed_form(wanted, p.to(x.dtype), log_a_p, log_b_p)
    return torch.where(wanted < count, t, -math.inf), count, top, top_index, tail


class _Thresholds(torch.autograd.Function):
    """x = beta s `[B, n]` (-inf: masked), items `[B, J]` (None: all) -> thresholds t = beta b
    `[B, k]` (t_k alone, `[B, 1]`, with `last`), the items' x `[B, J or n]` and min(n', 2k) `[B, 1]`,
    with the implicit backward (which also takes the items' gradient, so that no dense gather
    gradient is added)."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor | None, k: int, last: bool = False
                ) -> tuple[Tensor, Tensor, Tensor]:
        t, count, top, top_index, tail = _thresholds_forward(x, k, last)
        ctx.save_for_backward(x, index, t, top, top_index, tail)
        ctx.mark_non_differentiable(count)
        return t, (x.clone() if index is None else x.gather(-1, index)), count

    @staticmethod
    def backward(ctx, grad_t: Tensor, grad_items: Tensor, _) -> tuple[Tensor, None, None, None]:
        x, index, t, top, top_index, tail = ctx.saved_tensors
        valid = t > -math.inf
        t = torch.where(valid, t, 0.0)
        grad_t = torch.where(valid, grad_t, 0.0)
        # log sum_j F'(x_j - t_k) up to the factor 1/2; the tail lies below every threshold.
        top_terms = -(top[:, :, None] - t[:, None, :]).abs()  # [B, L, k]
        log_z = torch.where(valid, torch.logaddexp(top_terms.logsumexp(1), tail - t), 0.0)  # [B, k]
        top_grad = (grad_t[:, None, :] * torch.exp(top_terms - log_z[:, None, :])).sum(-1)  # [B, L]
        exponent = torch.where(valid, -t - log_z, -math.inf)
        shift = exponent.amax(-1, keepdim=True)
        shift = torch.where(shift > -math.inf, shift, 0.0)
        tail_sum = (grad_t * torch.exp(exponent - shift)).sum(-1, keepdim=True)
        # Below every threshold, x + shift <= 0 (clamped for the top items, which take top_grad).
        below = torch.add(x, shift).clamp_(max=0.0).exp_().mul_(tail_sum)
        if not torch.compiler.is_compiling():  # the top items' own gradients written over `below`
            grad_x = below.scatter_(-1, top_index, top_grad)
            if index is None:
                return grad_x + grad_items, None, None, None
            return grad_x.scatter_add_(-1, index, grad_items), None, None, None
        # Compiled: no scatter (inductor can order a read of a scatter's result before the scatter).
        # Each item takes the gradient of the top item of its value (a function of the value: ties
        # agree) and that of its copies in `items`: comparisons [B, L, n] and [B, J, n] that inductor
        # fuses into the pass over the row (eager mode would store them).
        match = torch.where(x[:, None, :] == top[:, :, None], top_grad[:, :, None], -math.inf).amax(1)
        grad_x = torch.where(match > -math.inf, match, below)
        if index is not None:
            item = torch.arange(x.shape[-1], device=x.device)
            grad_items = torch.where(item == index[:, :, None], grad_items[:, :, None], 0.0).sum(1)
        return grad_x + grad_items, None, None, None


def _log_cdf_difference(high: Tensor, low: Tensor) -> Tensor:
    """log(F(high) - F(low)) for low <= high (low may be -inf, high +inf), without cancellation."""
    gap = high - low
    straddles = (low <= 0) & (high > 0)
    # Same side of 0: (1/2) e^-dist (1 - e^-gap), dist the distance of [low, high] from 0.
    safe_gap = torch.where(gap > 0, gap, 1.0)
    one_side = LOG_HALF - torch.minimum(low.abs(), high.abs()) + torch.log(-torch.expm1(-safe_gap))
    # Across 0: (1/2) ((1 - e^-high) + (1 - e^low)), two non-negative terms.
    across = -torch.expm1(-high.clamp(min=0)) - torch.expm1(low.clamp(max=0))
    across = LOG_HALF + torch.log(torch.where(straddles, across, 1.0))
    return torch.where(straddles, across, torch.where(gap > 0, one_side, -math.inf))


def _log_ranks(scores: Tensor, index: Tensor | None, k: int, beta: float) -> Tensor:
    """log P[b, i, r], r < k, of the items `index` `[B, J]` (every item with None).
    [B, n] -> [B, J or n, k]"""
    n = scores.shape[-1]
    x = scores if beta == 1 else scores * beta  # masked items stay -inf
    t, items, count = _Thresholds.apply(x, index, k)
    real = items > -math.inf
    items = items.masked_fill(~real, 0.0)
    rank = torch.arange(k, device=scores.device)
    valid = (rank < count).expand(scores.shape[0], k)  # ranks of real items
    lower = torch.cat([torch.full_like(t[:, :1], math.inf), t[:, :-1]], -1)  # t_r; t_0 = +inf
    upper = t  # t_{r+1}; t_{n'} = -inf
    high = torch.where(valid[:, None, :], items[:, :, None] - upper[:, None, :], 0.0)
    low = torch.where(valid[:, None, :], items[:, :, None] - lower[:, None, :], 0.0)
    return masked_log_ranks(_log_cdf_difference(high, low), real, count, n)


def _laplace_cdf(z: Tensor) -> Tensor:
    """F(z), with finite gradients at z = +-inf."""
    return torch.where(z <= 0, 0.5 * torch.exp(z.clamp(max=0)), 1 - 0.5 * torch.exp(-z.clamp(min=0)))


def topk_mask(scores: Tensor, k: int, beta: float) -> Tensor:
    """The membership m_i(k) = F(beta (s_i - b_k)) = sum_{r<k} P[i, r], from the one threshold b_k
    (0 for masked items, 1 for every real item where k >= n').  [B, n] -> [B, n]"""
    x = scores if beta == 1 else scores * beta
    t, items, _ = _Thresholds.apply(x, None, k, True)
    real = items > -math.inf
    return _laplace_cdf(torch.where(real, items - t, -math.inf))


def _laplace_sums(falling: Tensor, log_weight: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """For values sorted descending `falling [B, n]` (the first `count [B, 1]` real, the others
    placeholders that keep the terms finite) and weights w = e^log_weight `[B, n]` in the same order:
    sum_{j<p} w_j e^(v_p - v_j) and sum_{p<j<count} w_j e^(v_j - v_p), `[B, n]` each (no gradient)."""
    none = torch.full_like(falling[:, :1], -math.inf)
    above = torch.exp(falling + torch.cat([none, torch.logcumsumexp(log_weight - falling, -1)[:, :-1]], -1))
    position = torch.arange(falling.shape[-1], device=falling.device)
    ascending = torch.where(position < count, count - 1 - position, position)  # an involution
    rising = torch.where(position < count, falling.gather(-1, ascending), falling[:, :1])
    log_rising_weight = log_weight.gather(-1, ascending)
    below = torch.exp(torch.cat([none, torch.logcumsumexp(log_rising_weight + rising, -1)[:, :-1]], -1)
                      - rising)
    return above, below.gather(-1, ascending)


class _PairwiseRanks(torch.autograd.Function):
    """x = beta s `[B, n]` -> rank_i = sum_{j != i} F(x_j - x_i) `[B, n]`; masked items (-inf)
    (n' + n - 1) / 2. Backward: d rank_i / d x_j = f(x_j - x_i) for j != i, f = F' = e^-|z| / 2, so
    grad x_j = sum_{i != j} (g_i - g_j) f(x_i - x_j): the same prefix sums with weights g (split into
    positive and negative parts), with no autograd graph through them."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        n = x.shape[-1]
        values, order = x.sort(dim=-1, descending=True)  # masked items last
        real = values > -math.inf
        count = real.sum(-1, keepdim=True)
        lowest = values.gather(-1, (count - 1).clamp(min=0))
        falling = torch.where(real, values, torch.where(count > 0, lowest, 0.0))
        above, below = _laplace_sums(falling, torch.where(real, 0.0, -math.inf), count)
        position = torch.arange(n, device=x.device).to(x.dtype)
        ranks = torch.where(real, position + 0.5 * (below - above), (count + n - 1) / 2)
        ctx.save_for_backward(falling, order, real, count, above + below)
        return torch.zeros_like(ranks).scatter(-1, order, ranks)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        falling, order, real, count, total = ctx.saved_tensors
        g = torch.where(real, grad.gather(-1, order), 0.0)
        kernel_g = sum(sign * sum(_laplace_sums(falling, torch.log(part), count))
                       for sign, part in ((1, g.clamp(min=0)), (-1, (-g).clamp(min=0))))
        sorted_grad = torch.where(real, 0.5 * (kernel_g - g * total), 0.0)
        return torch.zeros_like(sorted_grad).scatter(-1, order, sorted_grad)


def soft_ranks(scores: Tensor, beta: float) -> Tensor:
    """LapSum's soft rank, rank_i = sum_{j != i} F(beta (s_j - s_i)) (0 = the largest), in O(n log n).
    [B, n] -> [B, n]

    A sum of Laplace CDFs of pairwise differences: the expected number of items above i, each pair
    compared by F. It is not sum_r r P[i, r] of the threshold P above (which needs all n thresholds).
    With x = beta s sorted descending, v_0 >= ... >= v_{n-1}, the item at position p has
    p - (1/2) sum_{j<p} e^(v_p - v_j) + (1/2) sum_{j>p} e^(v_j - v_p): log-sum-exp prefix sums in
    the descending order and in the ascending order of the real items (a tie adds F(0) = 1/2 from
    either side). Masked items rank below every real item and tie among themselves: (n' + n - 1) / 2
    each, the limit of equal scores going to -inf."""
    return _PairwiseRanks.apply(scores if beta == 1 else scores * beta)


rank_matrix, item_ranks = from_log_ranks(_log_ranks)

RELAXATION = Relaxation("lapsum", "LapSum", "threshold", rank_matrix, item_ranks,
                        cost="O(n + K log K) forward, O(n K) for the full P",
                        output="K + 1 thresholds, then the labelled items' rows",
                        needs_m=False, reference="Struski, Bednarczyk, Podolak, Tabor, ICML 2025",
                        topk_mask=topk_mask, soft_ranks=soft_ranks)
