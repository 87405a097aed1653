"""Differentiable sorting and selection networks with a hand-written backward pass.

The state `[n, C, B]` holds the values (channel 0) and C-1 channels of probability mass: a
relaxed comparator mixes both with the same swap probability, so mass that starts one-hot on an
item ends spread over the output wires exactly as row `item` of the network's relaxed permutation
matrix. Each layer is laid out once (`_Plan`) as one gather that puts its comparators' min wires
first and their max wires next, so a layer costs a handful of vectorised ops forward and backward
and no index tensor is built per call. Wires come first in the state, so that every op works on
contiguous blocks of `C x B` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from ..networks import sorting_network
from ..sigmoids import DISTRIBUTIONS, Distribution

Tensor = torch.Tensor


@dataclass(frozen=True)
class _Plan:
    """Per layer: the gather from the previous layout and the number of comparators; the
    layout's first `c` positions are min wires, the next `c` their max wires. `output[r]` is the
    position of rank r (rank 0 = largest) in the last layout."""

    gathers: tuple[Tensor, ...]
    inverse_gathers: tuple[Tensor, ...]
    sizes: tuple[int, ...]
    output: Tensor


@lru_cache(maxsize=256)
def _plan(kind: str, n: int, k: int, device: torch.device) -> _Plan:
    layout = list(range(n))  # layout[p] = wire at position p
    gathers, inverse_gathers, sizes = [], [], []
    for layer in sorting_network(kind, n, k):
        lows = [lo for lo, _ in layer]
        highs = [hi for _, hi in layer]
        busy = set(lows) | set(highs)
        new_layout = lows + highs + [w for w in layout if w not in busy]
        position = {w: p for p, w in enumerate(layout)}
        gather = torch.tensor([position[w] for w in new_layout], dtype=torch.long)
        gathers.append(gather.to(device))
        inverse_gathers.append(torch.argsort(gather).to(device))
        sizes.append(len(layer))
        layout = new_layout
    position = {w: p for p, w in enumerate(layout)}
    output = torch.tensor([position[n - 1 - r] for r in range(k)], dtype=torch.long, device=device)
    return _Plan(tuple(gathers), tuple(inverse_gathers), tuple(sizes), output)


class _RelaxedNetwork(torch.autograd.Function):
    """state `[n, C, B]` -> the state on the wires of ranks 0..k-1, `[k, C, B]`."""

    @staticmethod
    def forward(ctx, state: Tensor, plan: _Plan, dist: Distribution, beta: float, lam: float) -> Tensor:
        diffs, swaps = [], []
        for gather, c in zip(plan.gathers, plan.sizes, strict=True):
            state = state.index_select(0, gather)
            d = state[c : 2 * c] - state[:c]
            swap = dist.swap(d[:, 0], beta, lam)
            state[:c].addcmul_(d, swap.unsqueeze(1))
            state[c : 2 * c].addcmul_(d, swap.unsqueeze(1), value=-1)
            diffs.append(d)
            swaps.append(swap)
        ctx.save_for_backward(*diffs, *swaps)
        ctx.plan, ctx.dist, ctx.beta, ctx.lam, ctx.n = plan, dist, beta, lam, state.shape[0]
        return state.index_select(0, plan.output)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        plan, dist, beta, lam = ctx.plan, ctx.dist, ctx.beta, ctx.lam
        layers = len(plan.sizes)
        diffs, swaps = ctx.saved_tensors[:layers], ctx.saved_tensors[layers:]
        grad = grad_out.new_zeros(ctx.n, *grad_out.shape[1:])
        grad.index_copy_(0, plan.output, grad_out)
        for layer in reversed(range(layers)):
            c, d, swap = plan.sizes[layer], diffs[layer], swaps[layer]
            g_low, g_high = grad[:c], grad[c : 2 * c]
            spread = g_low - g_high
            d_swap = (spread * d).sum(1)
            spread *= swap.unsqueeze(1)
            spread[:, 0].addcmul_(d_swap, dist.slope(d[:, 0], swap, beta, lam))
            g_low -= spread
            g_high += spread
            grad = grad.index_select(0, plan.inverse_gathers[layer])
        return grad, None, None, None, None


@torch.compiler.disable
def _cached_plan(kind: str, n: int, k: int, device: torch.device) -> _Plan:
    """The plan, looked up outside any compiled graph (tracing its construction is slow)."""
    return _plan(kind, n, k, device)


def _run(state: Tensor, kind: str, k: int, distribution: str, beta: float, lam: float) -> Tensor:
    plan = _cached_plan(kind, state.shape[0], k, state.device)
    return _RelaxedNetwork.apply(state, plan, DISTRIBUTIONS[distribution], beta, lam)


def rank_matrix(scores: Tensor, k: int, kind: str, beta: float, distribution: str, lam: float) -> Tensor:
    """P[b, i, r] = probability that item i ends on the wire of rank r.  [B, n] -> [B, n, k]"""
    n = scores.shape[-1]
    mass = torch.eye(n, dtype=scores.dtype, device=scores.device).unsqueeze(-1).expand(n, n, scores.shape[0])
    state = torch.cat([scores.t().unsqueeze(1), mass], dim=1)
    return _run(state, kind, k, distribution, beta, lam)[:, 1:].permute(2, 1, 0)


def item_ranks(
    scores: Tensor, index: Tensor, k: int, kind: str, beta: float, distribution: str, lam: float
) -> Tensor:
    """P[b, index[b], r] for r < k, one mass channel per row.  [B, n], [B] -> [B, k]"""
    values = scores.t()
    mass = torch.zeros_like(values).scatter_(0, index.unsqueeze(0), 1.0)
    return _run(torch.stack([values, mass], dim=1), kind, k, distribution, beta, lam)[:, 1].t()


def sorted_values(scores: Tensor, kind: str, beta: float, distribution: str, lam: float) -> Tensor:
    """Relaxed values in descending order.  [B, n] -> [B, n]"""
    return _run(scores.t().unsqueeze(1), kind, scores.shape[-1], distribution, beta, lam)[:, 0].t()
