"""The Triton backend of the sorting networks: the kernels' tables and launches, and its autograd
Functions (`LinearNetwork`, `LogNetwork`, and `ItemRanks`, the loss's one-item path), with the same
interface as `torch_path`: `linear_network(state, key, ...)` and `item_ranks(scores, index, key, ...)`,
`key` = (kind, n, k). The kernels compute in float32; `backend.choose` sends nothing else here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import triton

from . import triton_kernels as kernels
from .layouts import top_ranks_network
from .sigmoids import DISTRIBUTIONS, SIGMOIDS, Distribution
from .triton_maths import SIGMOID_NUMBERS

Tensor = torch.Tensor
Key = tuple[str, int, int]

BLOCK_B = 32  # batch columns per program: 128 bytes of float32, one coalesced segment
NUM_WARPS = 4
_SIGMOID_NUMBERS = {SIGMOIDS[name]: number for name, number in SIGMOID_NUMBERS.items()}


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
    kernels.forward_kernel[(triton.cdiv(batch, BLOCK_B),)](
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
    kernels.backward_kernel[(triton.cdiv(batch, BLOCK_B),)](
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
