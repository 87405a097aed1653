"""The torch path of the sorting and selection networks: autograd Functions with a hand-written
backward pass, from torch ops alone (any device, float32 and float64, `torch.compile`).

The state `[n, C, B]` holds on each wire the value (channel 0), optionally a mask channel (1 where
the wire holds a masked, `-inf` item) and probability mass: a relaxed comparator mixes all channels
with the same swap probability, so mass that starts one-hot on an item ends spread over the output
wires exactly as row `item` of the network's relaxed permutation matrix. A masked item never wins a
comparison (its swap is decided exactly, like a padding wire's), so it moves with no cost and never
takes a rank above a real item. For the exact loss the mass can travel in the log domain instead
(`LogNetwork`), where probabilities far below float's range keep their value and gradient.

Each layer is laid out once (`_Plan`) as one gather that puts its comparators' min wires first and
their max wires next, so a layer costs a handful of vectorised ops forward and backward and no
index tensor is built per call. Wires come first in the state, so that every op works on
contiguous blocks of `C x B` values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..relaxation import masked_items
from .layouts import top_ranks_network
from .sigmoids import Distribution

Tensor = torch.Tensor
Key = tuple[str, int, int]  # a network: (kind, n, k)


@dataclass(frozen=True)
class _Plan:
    """Per layer: the gather from the previous layout and the number of comparators; the
    layout's first `c` positions are min wires, the next `c` their max wires. `output[r]` is the
    position of rank r (rank 0 = largest) in the last layout."""

    gathers: tuple[Tensor, ...]
    inverse_gathers: tuple[Tensor, ...]
    sizes: tuple[int, ...]
    output: Tensor


def _plan(kind: str, n: int, k: int, device: torch.device) -> _Plan:
    layout = list(range(n))  # layout[p] = wire at position p
    gathers, inverse_gathers, sizes = [], [], []
    for layer in top_ranks_network(kind, n, k):
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


def _decide(state: Tensor, c: int, swap: Tensor, slope: Tensor | None, masked: bool):
    """Swap and slope of a layer's `c` comparators with the mask channel applied: a masked min wire
    keeps its item (swap 0), else a masked max wire gives it away (swap 1)."""
    if not masked:
        return swap, slope
    free_low, masked_high = 1 - state[:c, 1], state[c : 2 * c, 1]
    swap = free_low * (swap + masked_high * (1 - swap))
    if slope is not None:
        slope = slope * free_low * (1 - masked_high)
    return swap, slope


def _mix_backward(grad: Tensor, c: int, d: Tensor, swap: Tensor, slope: Tensor,
                  grad_d: Tensor | None = None) -> None:
    """Gradient through `lo += swap * d`, `hi -= swap * d` of the linear channels, `swap` a function of
    the values' d with derivative `slope`, in place on `grad [n, C, B]`; `grad_d` is a further dL/dd of
    the values channel from elsewhere."""
    g_low, g_high = grad[:c], grad[c : 2 * c]
    spread = g_low - g_high
    d_swap = (spread * d).sum(1)
    spread *= swap.unsqueeze(1)
    spread[:, 0].addcmul_(d_swap, slope)
    if grad_d is not None:
        spread[:, 0] += grad_d
    g_low -= spread
    g_high += spread


class LinearNetwork(torch.autograd.Function):
    """state `[n, C, B]` -> the state on the wires of ranks 0..k-1, `[k, C, B]`."""

    @staticmethod
    def forward(ctx, state: Tensor, plan: _Plan, dist: Distribution, beta: float, lam: float,
                masked: bool) -> Tensor:
        with_slope = ctx.needs_input_grad[0]
        saved = []
        for gather, c in zip(plan.gathers, plan.sizes, strict=True):
            state = state.index_select(0, gather)
            d = state[c : 2 * c] - state[:c]
            if with_slope:
                swap, slope = dist.swap_and_slope(d[:, 0], beta, lam)
            else:
                swap, slope = dist.swap(d[:, 0], beta, lam), None
            swap, slope = _decide(state, c, swap, slope, masked)
            state[:c].addcmul_(d, swap.unsqueeze(1))
            state[c : 2 * c].addcmul_(d, swap.unsqueeze(1), value=-1)
            if with_slope:
                saved += [d, swap, slope]
        ctx.save_for_backward(*saved)
        ctx.plan, ctx.n = plan, state.shape[0]
        return state.index_select(0, plan.output)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        plan, saved = ctx.plan, ctx.saved_tensors
        grad = grad_out.new_zeros(ctx.n, *grad_out.shape[1:])
        grad.index_copy_(0, plan.output, grad_out)
        for layer in reversed(range(len(plan.sizes))):
            c = plan.sizes[layer]
            _mix_backward(grad, c, *saved[3 * layer : 3 * layer + 3])
            grad = grad.index_select(0, plan.inverse_gathers[layer])
        return grad, None, None, None, None, None


class LogNetwork(torch.autograd.Function):
    """Linear channels `[n, L, B]` (values, and the mask if `masked`) and log-mass channels
    `[n, J, B]` -> both on the wires of ranks 0..k-1, `[k, L, B]` and `[k, J, B]`.

    A comparator maps log masses (a, b) of its min and max wire to logaddexp(a + log(1-s), b + log s)
    and logaddexp(a + log s, b + log(1-s)); the backward weighs each path by its share of the sum."""

    @staticmethod
    def forward(ctx, linear: Tensor, log_mass: Tensor, plan: _Plan, dist: Distribution, beta: float,
                lam: float, masked: bool) -> tuple[Tensor, Tensor]:
        saved = []
        for gather, c in zip(plan.gathers, plan.sizes, strict=True):
            linear, log_mass = linear.index_select(0, gather), log_mass.index_select(0, gather)
            d = linear[c : 2 * c] - linear[:c]
            log_swap, log_stay, slope_swap, slope_stay = dist.log_swap(d[:, 0], beta, lam)
            swap = log_swap.exp()
            if masked:
                low_masked, high_masked = linear[:c, 1] > 0, linear[c : 2 * c, 1] > 0
                free = ~(low_masked | high_masked)
                swap = torch.where(free, swap, (~low_masked).to(swap.dtype))
                log_swap = torch.where(free, log_swap, torch.where(low_masked, -torch.inf, 0.0))
                log_stay = torch.where(free, log_stay, torch.where(low_masked, 0.0, -torch.inf))
                slope_swap, slope_stay = slope_swap * free, slope_stay * free
            linear[:c].addcmul_(d, swap.unsqueeze(1))
            linear[c : 2 * c].addcmul_(d, swap.unsqueeze(1), value=-1)
            low, high = log_mass[:c].clone(), log_mass[c : 2 * c].clone()
            log_swap, log_stay = log_swap.unsqueeze(1), log_stay.unsqueeze(1)
            torch.logaddexp(low + log_stay, high + log_swap, out=log_mass[:c])
            torch.logaddexp(low + log_swap, high + log_stay, out=log_mass[c : 2 * c])
            mixed = log_mass[: 2 * c]  # this layer's own tensor, not written again
            saved += [d, swap, low, high, mixed, log_swap, log_stay, slope_swap, slope_stay]
        ctx.save_for_backward(*saved)
        ctx.plan, ctx.n = plan, linear.shape[0]
        return linear.index_select(0, plan.output), log_mass.index_select(0, plan.output)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_linear: Tensor, grad_log: Tensor):
        plan, saved = ctx.plan, ctx.saved_tensors
        grad = grad_linear.new_zeros(ctx.n, *grad_linear.shape[1:])
        grad.index_copy_(0, plan.output, grad_linear)
        grad_mass = grad_log.new_zeros(ctx.n, *grad_log.shape[1:])
        grad_mass.index_copy_(0, plan.output, grad_log)
        floor = torch.finfo(grad_log.dtype).min  # a zero total mass has zero weights, not NaN
        for layer in reversed(range(len(plan.sizes))):
            c = plan.sizes[layer]
            d, swap, low, high, mixed, log_swap, log_stay, slope_swap, slope_stay = saved[9 * layer :][:9]
            g_low, g_high = grad_mass[:c], grad_mass[c : 2 * c]
            total_low, total_high = mixed[:c].clamp_min(floor), mixed[c:].clamp_min(floor)
            low_stays = g_low * (low + log_stay - total_low).exp()
            high_swaps = g_low * (high + log_swap - total_low).exp()
            low_swaps = g_high * (low + log_swap - total_high).exp()
            high_stays = g_high * (high + log_stay - total_high).exp()
            grad_d = ((high_swaps + low_swaps).sum(1) * slope_swap
                      + (low_stays + high_stays).sum(1) * slope_stay)
            _mix_backward(grad, c, d, swap, swap * slope_swap, grad_d)  # d swap = swap d log swap
            torch.add(low_stays, low_swaps, out=g_low)
            torch.add(high_swaps, high_stays, out=g_high)
            inverse = plan.inverse_gathers[layer]
            grad, grad_mass = grad.index_select(0, inverse), grad_mass.index_select(0, inverse)
        return grad, grad_mass, None, None, None, None, None


_PLANS: dict[tuple[str, int, int, torch.device], _Plan] = {}


def cached_plan(kind: str, n: int, k: int, device: torch.device) -> _Plan:
    """The plan, built once per (kind, n, k, device). A plain dict, so that torch.compile reads a plan
    built before (and traces the build only the first time) without a graph break."""
    plan = _PLANS.get((kind, n, k, device))
    if plan is None:
        plan = _PLANS[kind, n, k, device] = _plan(kind, n, k, device)
    return plan


def linear_channels(scores: Tensor) -> tuple[Tensor, bool]:
    """`[n, L, B]`: the values with masked items set to 0, and a mask channel where needed."""
    masked = masked_items(scores)
    values = scores.t()
    if masked is None:
        return values.unsqueeze(1), False
    mask = masked.t().to(scores.dtype)
    return torch.stack([values.masked_fill(mask > 0, 0.0), mask], dim=1), True


def linear_network(state: Tensor, key: Key, dist: Distribution, beta: float, lam: float,
                   masked: bool) -> Tensor:
    """state `[n, C, B]` -> the state on the wires of ranks 0..k-1 `[k, C, B]`."""
    return LinearNetwork.apply(state, cached_plan(*key, state.device), dist, beta, lam, masked)


def item_ranks(scores: Tensor, index: Tensor, key: Key, dist: Distribution, beta: float, lam: float,
               log: bool) -> Tensor:
    """P[b, index[b, j], r] for r < k (log P with `log`), one mass channel per item.
    [B, n], [B, J] -> [B, J, k]"""
    linear, masked = linear_channels(scores)
    channels = linear.shape[1]
    start = index.t().unsqueeze(0)  # [1, J, B]
    shape = (scores.shape[1], index.shape[1], scores.shape[0])
    if log:
        plan = cached_plan(*key, scores.device)
        log_mass = scores.new_full(shape, -torch.inf).scatter_(0, start, 0.0)
        out = LogNetwork.apply(linear, log_mass, plan, dist, beta, lam, masked)[1]
    else:
        mass = scores.new_zeros(shape).scatter_(0, start, 1.0)
        out = linear_network(torch.cat([linear, mass], dim=1), key, dist, beta, lam, masked)[:, channels:]
    return out.permute(2, 1, 0)
