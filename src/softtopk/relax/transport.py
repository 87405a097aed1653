"""Entropic optimal transport between items and anchors, batched and in the log domain, with a
backward by implicit differentiation (shared by SinkhornSort and OT top-k).

    min_G <C, G> - (1/beta) H(G)   s.t.   G 1 = a,  G^T 1 = b,     C [B, n, m], a [B, n], b [B, m]

The solution is G_ij = exp(alpha_i + gamma_j - beta C_ij); `entropic_transport` returns the
potentials (alpha, gamma) in these log units. A zero marginal (log marginal -inf) masks an item or
an anchor: its potential is -inf, so its row or column of G is 0, without NaN.

Forward: log-domain iterations on the anchor potentials gamma, each followed by the exact row
update alpha = log a - logsumexp_j(gamma_j - beta C_ij), started at inverse temperature min(1, beta)
and doubled every iteration until it reaches beta (epsilon scaling). A step is either Sinkhorn's
column update, gamma_j += log b_j - log(G^T 1)_j, or a Newton step on the column equations,
S d = b - G^T 1 with S the Schur complement below, damped to at most `NEWTON_STEP` per potential.
A Newton step follows a Sinkhorn step that left more than `SLOW_SINKHORN` of the column error, and
is kept where it does not lower the (concave) dual objective sum_i a_i alpha_i + sum_j b_j gamma_j
beyond rounding; else it is retried 4x shorter, down to `MIN_DAMPING`, and Sinkhorn takes over. The
dual, not the column error, is the test because along a weakly linked direction (two groups of
anchors that share almost no item) it rises long before any mass moves. Plain Sinkhorn mixes like a
diffusion along the chain of anchors: for SinkhornSort and OT top-k with n = 7 (float64, tolerance
1e-10) it needed 2470 and 11486 iterations at beta = 100 and over 20000 at beta = 1000; with the
Newton steps at most 22 (SinkhornSort, n <= 100) and 186 (OT top-k, n <= 100, beta <= 1e5),
warm-up included. Costs of order 1 (as here) and beta > `FLOAT32_MAX_BETA` make float32 too coarse
for potentials of size beta: such problems are solved in float64.
The stopping rule depends on the device, never on whether the code is compiled:

- CPU: stop once every column of G sums to its marginal within `TOLERANCE` (relative, plus the
  rounding floor of the potentials), tested every `CHECK_EVERY` iterations at the target
  temperature; at most `MAX_ITERATIONS`, with a RuntimeWarning where that is not enough.
- other devices: `DEVICE_ITERATIONS` iterations at the target temperature after the warm-up, and no
  test, so that nothing waits for the device (every case above needs fewer, except OT top-k with
  n >= 100 at beta = 1e5).

Backward: at the fixed point F(alpha, gamma, C) = (G 1 - a, G^T 1 - b) = 0, so for gradients
(u, v) of a loss with respect to (alpha, gamma) the adjoint system is

    [[diag(G 1), G], [G^T, diag(G^T 1)]] [x; y] = [u; v],     dL/dC_ij = beta G_ij (x_i + y_j).

It is solved by its Schur complement on the anchor side, S y = v - G^T diag(G 1)^-1 u with
S = diag(G^T 1) - G^T diag(G 1)^-1 G, an m x m graph Laplacian that is built from its off-diagonal
entries (no cancellation on the diagonal). S has the null space 1 (adding t to every alpha and -t
to every gamma leaves G unchanged): the right-hand side is projected onto its complement and S gets
a ridge of machine epsilon times its degrees. The backward costs one pass over the plan, one
batched m x m matmul and solve; nothing is unrolled. It assumes that the loss depends on the
potentials only through log G (alpha_i + gamma_j - beta C_ij), as every caller here does.

Both directions are registered with `torch.library.custom_op`, so `torch.compile(fullgraph=True)`
treats them as opaque operators and compiled results equal eager ones. Double backward is not
supported.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from .._checks import eager_cpu

#: Relative column-marginal error at which the CPU iterations stop (the rows are exact).
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
#: Iteration cap on CPU, warm-up included (about log2(beta) iterations).
MAX_ITERATIONS = 500
#: On CPU, test for convergence every this many iterations.
CHECK_EVERY = 2
#: On other devices, iterations at the target temperature after the warm-up (no test).
DEVICE_ITERATIONS = 100
#: Above this beta, float32 problems are solved in float64 (costs of order 1 assumed): the
#: potentials grow like beta * C, and float32 rounding of them stalls the iterations or leaves
#: errors of 1e-3 to 5e-2 in the marginals (OT top-k, n = 200 to 1000, beta = 1e4).
FLOAT32_MAX_BETA = 100.0
#: A Sinkhorn step that leaves more than this fraction of the column error is followed by a Newton step.
SLOW_SINKHORN = 0.25
#: Largest change of a potential in one Newton step, and the damping below which a Newton step is
#: abandoned for a Sinkhorn step.
NEWTON_STEP = 4.0
MIN_DAMPING = 1e-3


def _warm_up(beta: float) -> list[float]:
    """Inverse temperatures of the epsilon-scaling steps before the target one."""
    scales, scale = [], min(1.0, beta)
    while scale < beta:
        scales.append(scale)
        scale *= 2
    return scales


def _solve_laplacian(plan: Tensor, inverse_rows: Tensor, cols: Tensor, rhs: Tensor) -> Tensor:
    """y with S y = rhs, S = diag(G^T 1) - G^T diag(inverse_rows) G, on the complement of its null
    space 1; masked anchors (column sum 0) get y = 0.
    plan^T [B, m, n] (anchor-major), [B, n], [B, m], [B, m] -> [B, m]"""
    real_b = cols > 0
    rhs = rhs.masked_fill(~real_b, 0.0)
    mean = rhs.sum(-1, keepdim=True) / real_b.sum(-1, keepdim=True).clamp(min=1)
    rhs = torch.where(real_b, rhs - mean, 0.0)
    ridge = torch.finfo(plan.dtype).eps * cols + (~real_b).to(plan.dtype)
    laplacian = (plan @ (plan * inverse_rows[:, None, :]).transpose(1, 2)).neg_()  # -links [B, m, m]
    diagonal = laplacian.diagonal(dim1=1, dim2=2)
    diagonal.zero_()
    diagonal.copy_(ridge - laplacian.sum(-1))  # the links' row sums, plus the ridge
    return torch.linalg.solve_ex(laplacian, rhs[:, :, None])[0][:, :, 0]


class _State:
    """Potentials with exact rows (alpha from gamma), the plan (transposed, [B, m, n]), its column
    sums and their L1 error, and the dual objective, at one inverse temperature."""

    def __init__(self, kernel: Tensor, gamma: Tensor, log_a: Tensor, a: Tensor, b: Tensor) -> None:
        shifted = kernel + gamma[:, :, None]  # [B, m, n]
        top = shifted.amax(1, keepdim=True).clamp(min=torch.finfo(kernel.dtype).min)  # finite
        unnormalised = shifted.sub_(top).exp_()
        total = unnormalised.sum(1)
        self.gamma = gamma
        self.alpha = torch.where(log_a > -math.inf, log_a - top[:, 0, :] - total.log(), -math.inf)
        self.plan = unnormalised.mul_(torch.where(total > 0, a / total, 0.0)[:, None, :])  # rows exactly a
        self.cols = self.plan.sum(-1)
        self.error = (self.cols - b).abs().sum(-1)
        # The dual objective (concave in gamma, rows optimal) and the size of its rounding.
        terms_a = a * torch.where(self.alpha > -math.inf, self.alpha, 0.0)  # masked: 0 * -inf = 0
        terms_b = b * torch.where(gamma > -math.inf, gamma, 0.0)
        self.dual = terms_a.sum(-1) + terms_b.sum(-1)
        self.rounding = 16 * torch.finfo(kernel.dtype).eps * (terms_a.abs().sum(-1) + terms_b.abs().sum(-1))

    def where(self, keep: Tensor, other: _State) -> _State:
        """Rows `keep` [B] from self, the others from other."""
        for name in ("gamma", "alpha", "plan", "cols", "error", "dual", "rounding"):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(other, name, torch.where(keep.view(-1, *[1] * (mine.dim() - 1)), mine, theirs))
        return other


@torch.library.custom_op("softtopk::entropic_transport", mutates_args=())
def _transport(cost: Tensor, log_a: Tensor, log_b: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    real_a, real_b = log_a > -math.inf, log_b > -math.inf
    log_b = log_b + (torch.logsumexp(log_a, -1, keepdim=True) - torch.logsumexp(log_b, -1, keepdim=True))
    a, b = log_a.exp(), log_b.exp()  # b rescaled to the mass of a: both sides balance to rounding
    inverse_a = torch.where(real_a, 1 / a, 0.0)
    tiny, eps = torch.finfo(cost.dtype).tiny, torch.finfo(cost.dtype).eps
    tolerance = TOLERANCE.get(cost.dtype, TOLERANCE[torch.float32])
    on_cpu = eager_cpu(cost)
    warm_up = _warm_up(beta)
    schedule = [*warm_up, beta]
    cost = cost.transpose(1, 2).contiguous()  # [B, m, n]: contiguous reductions over the items
    kernel = -schedule[0] * cost
    largest_cost = cost.flatten(1).amax(-1) if on_cpu else None
    state = _State(kernel, torch.where(real_b, 0.0, -math.inf), log_a, a, b)
    newton = torch.zeros_like(real_b[:, 0])  # [B]: the next step of the row is a Newton step
    damping = torch.ones_like(log_a[:, 0])  # [B]: its length, relative to the full Newton step
    for iteration in range(MAX_ITERATIONS if on_cpu else len(warm_up) + DEVICE_ITERATIONS):
        settled = iteration >= len(warm_up)
        log_cols = state.cols.clamp(min=tiny).log()
        if on_cpu and settled and (iteration - len(warm_up)) % CHECK_EVERY == 0:
            # log(column sum / b); the floor is the rounding of potentials and costs up to beta * max C.
            error = torch.where(real_b, log_cols - log_b, 0.0).abs().amax(-1)
            size = state.gamma.masked_fill(~real_b, 0).abs().amax(-1) + beta * largest_cost
            if bool((error <= tolerance + 16 * eps * size).all()):
                break
        step = torch.where(real_b, log_b - log_cols, 0.0)  # Sinkhorn's exact column update
        if not on_cpu or bool(newton.any()):
            direction = _solve_laplacian(state.plan, inverse_a, state.cols, b - state.cols)
            # Damped, and at most NEWTON_STEP per potential: the linearisation of exp holds only nearby.
            largest = direction.abs().amax(-1)
            direction = direction * (damping * (NEWTON_STEP / largest.clamp(min=NEWTON_STEP)))[:, None]
            step = torch.where(newton[:, None], direction, step)
        trial = _State(kernel, state.gamma + step, log_a, a, b)
        # A Sinkhorn step always improves the dual; a Newton step must not lower it beyond rounding
        # (else it is retried shorter, until it is too short and a Sinkhorn step follows). The dual
        # rises along a weakly linked direction long before the column error moves.
        accept = ~newton | (trial.dual >= state.dual - state.rounding)
        damping = torch.where(accept, (4 * damping).clamp(max=1.0), damping / 4)
        give_up = damping < MIN_DAMPING
        slow = trial.error > SLOW_SINKHORN * state.error
        newton = torch.where(newton, ~give_up, slow)
        damping = torch.where(give_up, 1.0, damping)
        state = trial.where(accept, state)
        if not settled:
            scale = schedule[iteration + 1]
            kernel = -scale * cost
            state = _State(kernel, state.gamma * (scale / schedule[iteration]), log_a, a, b)
    else:
        if on_cpu:
            warnings.warn(
                f"entropic transport did not converge in {MAX_ITERATIONS} iterations at inverse_temperature="
                f"{beta}: the rank probabilities are only approximately normalised; a lower "
                "inverse_temperature converges faster",
                RuntimeWarning,
                stacklevel=2,
            )
    return state.alpha, state.gamma


@_transport.register_fake
def _(cost: Tensor, log_a: Tensor, log_b: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    return log_a.new_empty(log_a.shape), log_b.new_empty(log_b.shape)


@torch.library.custom_op("softtopk::entropic_transport_backward", mutates_args=())
def _transport_backward(
    cost: Tensor, alpha: Tensor, gamma: Tensor, beta: float, grad_alpha: Tensor, grad_gamma: Tensor
) -> Tensor:
    plan = torch.exp(alpha[:, None, :] + gamma[:, :, None] - beta * cost.transpose(1, 2))  # [B, m, n]
    rows, cols = plan.sum(1), plan.sum(-1)
    inverse_rows = torch.where(rows > 0, 1 / rows, 0.0)
    scaled_u = torch.where(rows > 0, grad_alpha, 0.0) * inverse_rows
    rhs = grad_gamma - (plan @ scaled_u[:, :, None])[:, :, 0]  # v - G^T D_r^-1 u
    y = _solve_laplacian(plan, inverse_rows, cols, rhs)
    x = scaled_u - (y[:, None, :] @ plan)[:, 0, :] * inverse_rows
    grad = (beta * plan * (x[:, None, :] + y[:, :, None])).transpose(1, 2)
    return grad if grad.stride() == cost.stride() else grad.contiguous()  # the layout of the cost


@_transport_backward.register_fake
def _(cost: Tensor, alpha: Tensor, gamma: Tensor, beta: float, grad_alpha: Tensor, grad_gamma: Tensor
      ) -> Tensor:
    return torch.empty_like(cost)


def _setup_context(ctx, inputs, output) -> None:
    cost, _, _, beta = inputs
    ctx.save_for_backward(cost, *output)
    ctx.beta = beta


def _backward(ctx, grad_alpha: Tensor | None, grad_gamma: Tensor | None):
    cost, alpha, gamma = ctx.saved_tensors
    grad_alpha = torch.zeros_like(alpha) if grad_alpha is None else grad_alpha
    grad_gamma = torch.zeros_like(gamma) if grad_gamma is None else grad_gamma
    return _transport_backward(cost, alpha, gamma, ctx.beta, grad_alpha, grad_gamma), None, None, None


_transport.register_autograd(_backward, setup_context=_setup_context)


def entropic_transport(cost: Tensor, log_a: Tensor, log_b: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Potentials of the entropic transport plan, log G_ij = alpha_i + gamma_j - beta C_ij.

    cost `[B, n, m]` (the solver works on its transpose: a cost laid out anchor-major, such as a
    transposed `[B, m, n]` tensor, is not copied); log marginals log_a `[B, n]` and log_b `[B, m]`
    (-inf: masked; b is rescaled to the mass of a, so build them in float64 where they must
    balance exactly); beta > 0 -> alpha `[B, n]`, gamma `[B, m]`. Differentiable in `cost` only,
    by implicit differentiation; the loss must read the potentials through log G. float32
    problems with beta > FLOAT32_MAX_BETA are solved, and return their potentials, in float64."""
    if cost.dtype != torch.float64 and beta > FLOAT32_MAX_BETA:
        cost = cost.double()
    log_a, log_b = log_a.to(cost.dtype).contiguous(), log_b.to(cost.dtype).contiguous()
    return _transport(cost, log_a, log_b, float(beta))
