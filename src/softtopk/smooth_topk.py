"""Smooth top-k SVM losses (Berrada, Zisserman, Kumar, ICLR 2018): the "smooth top-5" baseline.

For one sample with logits x[C], label y, s = x / (k·τ) and s' the C − 1 scaled logits other than y,

    loss = τ·log Σ_{|S|=k} exp((α·[y ∉ S] + mean_{j∈S} x_j) / τ)
           − τ·log Σ_{|S|=k, y∈S} exp(mean_{j∈S} x_j / τ)
         = τ · softplus(log σ_k(e^{s'}) − log σ_{k−1}(e^{s'}) − s_y + α/τ),

with σ_j the j-th elementary symmetric polynomial. As τ → 0 it tends to the top-k hinge
max(0, α + (x'_[k] − x_y) / k), x'_[k] the k-th largest logit other than x_y.
The hard variant uses that hinge for the samples whose k-th and (k+1)-th largest logits (label
included) are at least k·τ·log(1000) apart, i.e. where the best k-subset outweighs every other one by
a factor of at least 1000 (the switching rule of the authors' implementation).

Computation. Let c be the k-th largest of s', T the k classes it ranks first, v_i = e^{c − s_i} ≤ 1 for
i ∈ T and r_i = e^{s_i − c} ≤ 1 for the other classes (0 for y and T). Factoring e^{s_i − c} = 1 / v_i
out of every class in T gives

    log σ_k(e^{s'}) − log σ_{k−1}(e^{s'}) = c + log Σ_j σ_j(v)·σ_j(r) − log Σ_j σ_{j+1}(v)·σ_j(r),

two sums of positive terms that are at least 1 (their j = 0 terms), of items at most 1. Their σ_j take
one prefix sum per degree, with a hand-written backward (`_Margin`) whose rounding can grow like 2^k:
beyond k = 10 the log-space divide and conquer `log_elementary_symmetric` (exact for every k, O(C·k²)
work) is used instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._checks import check_int, check_positive_finite, check_real
from ._conventions import check_ignore_index, check_reduction, check_weight, flatten, reduce
from .relax.relaxation import masked_items
from .targets import index_targets

_HARD_GAP = math.log(1000.0)
_FAST_MAX_K = 10  # largest k for `_Margin`, whose backward can lose up to 2^k ulp


def log_elementary_symmetric(log_x: Tensor, k: int) -> Tensor:
    """log σ_j(exp(log_x)) for j = 0..k along the last dimension: [N, n] -> [N, k + 1], 1 <= k <= n.

    Divide and conquer: start from the polynomials 1 + x_i·t of the items, multiply the two halves
    of the item dimension together until one polynomial is left; when the count is odd, the last
    one goes into a running product. Coefficients lie in the first dimension, [degree + 1, N, items],
    so that every step works on whole [N, items] slices.
    """
    polys = torch.stack((torch.zeros_like(log_x), log_x))  # [2, N, n]
    odd = None
    while polys.shape[2] > 1:
        if polys.shape[2] % 2:
            last = polys[:, :, -1:]
            odd = last if odd is None else _log_poly_mul(odd, last, k)
            polys = polys[:, :, :-1]
        half = polys.shape[2] // 2
        polys = _log_poly_mul(polys[:, :, :half], polys[:, :, half:], k)
    if odd is not None:
        polys = _log_poly_mul(polys, odd, k)
    return polys[:, :, 0].T


def _log_poly_mul(a: Tensor, b: Tensor, k: int) -> Tensor:
    """Product of polynomials given by log coefficients, [p + 1, N, G] × [q + 1, N, G] -> [m + 1, N, G]
    with m = min(p + q, k): c_d = logsumexp_i (a_i + b_{d−i})."""
    p, q = a.shape[0] - 1, b.shape[0] - 1
    i = torch.arange(p + 1, device=a.device)
    j = torch.arange(min(p + q, k) + 1, device=a.device)[:, None] - i  # [m + 1, p + 1]
    outside = ((j < 0) | (j > q))[:, :, None, None]
    terms = a + b[j.clamp(0, q)]  # [m + 1, p + 1, N, G]
    return terms.masked_fill(outside, -math.inf).logsumexp(dim=1)


class _Margin(torch.autograd.Function):
    """log σ_k(e^{s'}) − log σ_{k−1}(e^{s'}) − s_y of the scaled logits s = scale·x: x [N, C] and `index` from
    `_largest` -> [N]. As in the module docstring, it is c + log A − log B − s_y with A = Σ_j σ_j(v)·σ_j(r)
    and B = Σ_j σ_{j+1}(v)·σ_j(r); c is held constant, as the value does not depend on it.

    The rest items are evaluated as r·C^{-1/2}: then σ_j ≤ C^{j/2} / j! cannot overflow, and the terms that
    matter (at least eps / binom(k, j)) stay above float32's smallest normal number for C up to 4e5.
    Backward, by hand: ∂A/∂r_i = Σ_j σ_j(v)·σ_{j−1}(r without r_i) and σ_e(r without r_i) =
    Σ_d (−r_i)^d σ_{e−d}(r), a polynomial in r_i with per-row coefficients evaluated by Horner's rule in
    k passes over [N, C] (`_rest_grad`); for the k items of v, σ(v without v_i) directly (`_top_grad`).
    """

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, scale: float) -> Tensor:
        k = index.shape[1] - 1
        picked = x.gather(1, index) * scale
        c = picked[:, k - 1:k]
        log_v = c - picked[:, :k]
        # σ of v (row 0) and of v without v_i (row 1 + i, where v_i is set to 0), for the backward
        without = 1 - torch.eye(k + 1, k, dtype=x.dtype, device=x.device).roll(1, dims=0)
        log_sigma_v = _log_sigma((log_v.exp()[:, None] * without).flatten(0, 1), k).view(-1, k + 1, k + 1)
        half_log_c = 0.5 * math.log(x.shape[1])
        r = (x * scale).sub_(c + half_log_c).scatter_(1, index, -math.inf).exp_()
        log_unscale = half_log_c * torch.arange(k + 1, dtype=x.dtype, device=x.device)  # log C^{j/2}
        log_w = _weights(log_sigma_v[:, 0], 1) + log_unscale  # A and B as sums of σ_j(r·C^{-1/2})
        log_sigma_r = _log_sigma(r, k)
        log_ab = (log_w + log_sigma_r[:, None]).logsumexp(dim=2)
        ctx.save_for_backward(index, r, log_v, log_sigma_v, log_w, log_sigma_r, log_unscale, log_ab)
        ctx.scale = scale
        return log_ab[:, 0] - log_ab[:, 1] + c[:, 0] - picked[:, k]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        index, r, log_v, log_sigma_v, log_w, log_sigma_r, log_unscale, log_ab = ctx.saved_tensors
        grad_ab = torch.stack((grad, -grad), dim=1) * ctx.scale  # by log A and log B, times ∂s/∂x
        out = _rest_grad(r, log_w, log_sigma_r, log_ab, grad_ab)
        log_w_v = _weights(log_sigma_r + log_unscale, -1)  # A and B as sums of σ_j(v)
        top = _top_grad(log_v, log_sigma_v[:, 1:, :-1], log_w_v, log_ab, grad_ab)  # = −∂/∂s_i
        return out.scatter_(1, index, torch.cat((-top, -ctx.scale * grad[:, None]), dim=1)), None, None


def _weights(log_sigma: Tensor, offset: int) -> Tensor:
    """log σ_j and log σ_{j+offset} (−inf outside 0..k): [N, k + 1] -> [N, 2, k + 1]. From σ(v) with offset 1,
    the weights of σ_j(r) in A and B; from σ(r) with offset −1, those of σ_j(v)."""
    none = torch.full_like(log_sigma[:, :1], -math.inf)
    shifted = torch.cat((log_sigma[:, 1:], none) if offset == 1 else (none, log_sigma[:, :-1]), dim=1)
    return torch.stack((log_sigma, shifted), dim=1)


def _rest_grad(r: Tensor, log_w: Tensor, log_sigma: Tensor, log_f: Tensor, grad: Tensor) -> Tensor:
    """Σ_m grad_m·∂log F_m/∂log r_i for F_m = Σ_j w_mj σ_j(r): r [N, n], log w [N, M, k + 1],
    log σ(r) [N, k + 1], log F [N, M], grad [N, M] -> [N, n].

    The coefficient of (−r_i)^d is c_d = Σ_j a_{j+d+1} σ_j with a_j = Σ_m grad_m w_mj / F_m. The alternating
    terms are within binomial factors of k of the result (as v <= 1 and r <= 1): at most 2^k ulp are lost,
    where k + 1 classes tie and the rest lie far below, much less elsewhere."""
    k = log_sigma.shape[1] - 1
    a = (grad[:, :, None] * (log_w[:, :, 1:] - log_f[:, :, None]).exp()).sum(dim=1)  # a_1..a_k: [N, k]
    windows = F.pad(a, (0, k - 1)).unfold(1, k, 1)  # [N, d, j] = a_{j+d+1}
    coef = (windows * log_sigma[:, None, :k].exp()).sum(dim=2)
    poly = coef[:, -1:].repeat(1, r.shape[1])
    for d in range(k - 2, -1, -1):
        torch.addcmul(coef[:, d:d + 1], r, poly, value=-1, out=poly)
    return poly.mul_(r)


def _top_grad(log_v: Tensor, log_sigma_without: Tensor, log_w: Tensor, log_f: Tensor, grad: Tensor) -> Tensor:
    """Σ_m grad_m·∂log F_m/∂log v_i for F_m = Σ_j w_mj σ_j(v), from σ_{j−1}(v without v_i): log v [N, k],
    log σ_j(v without v_i) [N, k (i), k (j)], log w [N, M, k + 1], log F [N, M], grad [N, M] -> [N, k]."""
    log_rel = log_w[:, :, None, 1:] - log_f[:, :, None, None]  # [N, M, 1, k]
    terms = log_rel + log_sigma_without[:, None] + log_v[:, None, :, None]  # [N, M, i, j − 1]
    return (grad[:, :, None, None] * terms.exp()).sum(dim=(1, 3))


def _log_sigma(r: Tensor, k: int) -> Tensor:
    """log σ_j(r) for j = 0..k of items r >= 0: [N, n] -> [N, k + 1].

    E_j(i) = E_j(i−1) + r_i·E_{j−1}(i−1) over prefixes: σ_j is the sum of the terms r_i·E_{j−1}(i−1), and
    E_j their cumulative sum, computed in place. Positive sums only; the caller keeps σ_j within range."""
    sigma = [r.new_ones(r.shape[0]), r.sum(dim=1)]
    terms = r
    for j in range(2, k + 1):
        prefix = terms.cumsum(dim=1) if j == 2 else terms.cumsum_(dim=1)  # E_{j−1}(i), i >= j − 1; r stays
        terms = prefix[:, :-1].mul_(r[:, j - 1:])
        sigma.append(terms.sum(dim=1))
    return torch.stack(sigma, dim=1).log()


def smooth_topk_loss(input: Tensor, target: Tensor, k: int, tau: float = 1.0, alpha: float = 1.0,
                     reduction: str = "mean", *, weight: Tensor | None = None,
                     ignore_index: int = -100) -> Tensor:
    """Smooth top-k SVM loss of logits `input` for class indices `target`; 1 <= k < C.

    Shapes, `weight`, `ignore_index` and `reduction` as in `torch.nn.functional.cross_entropy`: input
    `[N, C]`, `[N, C, d1, ...]` or `[C]`, target `[N]`, `[N, d1, ...]` or `[]`. Returns a scalar, or the
    target's shape for `reduction='none'`. Half-precision input is computed in float32.
    """
    return _loss(input, target, k, tau, alpha, reduction, weight, ignore_index, hard=False)


def smooth_hard_topk_loss(input: Tensor, target: Tensor, k: int, tau: float = 1.0, alpha: float = 1.0,
                          reduction: str = "mean", *, weight: Tensor | None = None,
                          ignore_index: int = -100) -> Tensor:
    """Smooth top-k SVM loss that switches per sample to the top-k hinge where the k-th and (k+1)-th
    largest logits are at least k·τ·log(1000) apart. Arguments as `smooth_topk_loss`."""
    return _loss(input, target, k, tau, alpha, reduction, weight, ignore_index, hard=True)


def _loss(input: Tensor, target: Tensor, k: int, tau: float, alpha: float, reduction: str,
          weight: Tensor | None, ignore_index: int, hard: bool) -> Tensor:
    x, target, shape, tau, alpha = _checked(input, target, k, tau, alpha, reduction, ignore_index)
    check_weight(weight, x.shape[1])
    targets = index_targets(target, x.shape[1], weight, ignore_index, x.dtype)
    safe = targets.classes[:, 0]
    masked = masked_items(x)
    if masked is not None:
        # A masked (-inf) target has an infinite loss, as in cross-entropy. With at most k real classes
        # the target is surely in the top k: the loss is its limit 0. Such rows run on finite stand-ins.
        target_masked = masked.gather(1, safe[:, None])[:, 0]
        settled = target_masked | ((~masked).sum(1) <= k)
        x = x.masked_fill(settled[:, None], 0.0)
    top, index = _largest(x, safe, k)
    loss = _smooth(x, index, k, tau, alpha)
    if hard:
        is_hard = top[:, k - 1] - top[:, k] >= k * tau * _HARD_GAP
        # where() passes zero gradient to the branch it does not pick; both branches are finite everywhere
        loss = torch.where(is_hard, _hinge(x, index, k, alpha), loss)
    if masked is not None:
        loss = loss.masked_fill(settled, 0.0).masked_fill(target_masked, torch.inf)
    return reduce(targets.rows(loss[:, None]), reduction, shape, targets.count)


def _largest(x: Tensor, target: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k + 1 largest logits of each row [N, k + 1], and the indices of the k largest other than the
    target's, in decreasing order, followed by the target: [N, k + 1]."""
    top = x.detach().topk(k + 1, dim=1)
    # from the label's position on, every entry moves up by one
    seen_label = (top.indices == target[:, None]).cumsum(dim=1)[:, :k].bool()
    others = torch.where(seen_label, top.indices[:, 1:], top.indices[:, :k])
    return top.values, torch.cat((others, target[:, None]), dim=1)


def _smooth(x: Tensor, index: Tensor, k: int, tau: float, alpha: float) -> Tensor:
    """Per-sample smooth top-k SVM loss: [N, C] -> [N], `index` from `_largest`."""
    scale = 1.0 / (k * tau)
    if k <= _FAST_MAX_K:
        margin = _Margin.apply(x, index, scale)
    else:
        picked = x.gather(1, index) * scale
        shift = picked[:, k - 1:k].detach()  # for float32 accuracy; the value does not depend on it
        log_sigma = log_elementary_symmetric(_others(x * scale - shift, index[:, k]), k)
        margin = log_sigma[:, k] - log_sigma[:, k - 1] + shift[:, 0] - picked[:, k]
    z = margin + alpha / tau
    return tau * torch.logaddexp(z, torch.zeros_like(z))  # softplus, without its linear cut-off


def _hinge(x: Tensor, index: Tensor, k: int, alpha: float) -> Tensor:
    """Per-sample top-k hinge max(0, α + (x'_[k] − x_y) / k): [N, C] -> [N], `index` from `_largest`."""
    kth_other, x_y = x.gather(1, index[:, k - 1:]).unbind(dim=1)
    return (alpha + (kth_other - x_y) / k).clamp(min=0)


def _others(x: Tensor, target: Tensor) -> Tensor:
    """The entries of each row but the target's, in order: [N, C] -> [N, C − 1]."""
    index = torch.arange(x.shape[1] - 1, device=x.device).expand(x.shape[0], -1)
    return x.gather(1, index + (index >= target[:, None]))


def _check_params(k: object, tau: object, alpha: object, reduction: object) -> tuple[float, float]:
    """Checks of the arguments that do not depend on the data; returns tau and alpha as floats."""
    check_int(k, "k", low=1)
    tau = check_positive_finite(tau, "tau")
    alpha = check_real(alpha, "alpha", low=0.0, high=math.inf, high_open=True)
    check_reduction(reduction)
    return tau, alpha


def _checked(input: object, target: object, k: object, tau: object, alpha: object, reduction: object,
             ignore_index: object) -> tuple[Tensor, Tensor, tuple[int, ...], float, float]:
    """Validates all arguments; returns the logits `[M, C]` (half precision raised to float32), the
    targets `[M]`, the shape of per-prediction results, tau and alpha."""
    tau, alpha = _check_params(k, tau, alpha, reduction)
    check_ignore_index(ignore_index)
    x, target, shape = flatten(input, target, dense=False)
    n_classes = x.shape[1]
    if k >= n_classes:
        raise ValueError(f"k must be < C, the number of classes ({n_classes}): the loss compares the "
                         f"label with k others, so it needs C >= k + 1; got k = {k}")
    x = x.float() if torch.finfo(x.dtype).bits < 32 else x
    return x, target, shape, tau, alpha


class _TopKSVMLoss(torch.nn.Module):
    """Holds the checked parameters; subclasses name the functional loss they apply."""

    def __init__(self, k: int, tau: float = 1.0, alpha: float = 1.0, reduction: str = "mean", *,
                 weight: Tensor | None = None, ignore_index: int = -100) -> None:
        super().__init__()
        self.tau, self.alpha = _check_params(k, tau, alpha, reduction)
        check_weight(weight)
        self.register_buffer("weight", weight)
        self.k, self.reduction, self.ignore_index = k, reduction, check_ignore_index(ignore_index)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return self.loss_fn(input, target, self.k, self.tau, self.alpha, self.reduction, weight=self.weight,
                            ignore_index=self.ignore_index)

    def extra_repr(self) -> str:
        return f"k={self.k}, tau={self.tau}, alpha={self.alpha}, reduction={self.reduction!r}"


class SmoothTopKLoss(_TopKSVMLoss):
    """Smooth top-k SVM loss, `(input [N, C, ...], target [N, ...]) -> loss`; see `smooth_topk_loss`."""

    loss_fn = staticmethod(smooth_topk_loss)


class SmoothHardTopKLoss(_TopKSVMLoss):
    """Smooth top-k SVM loss with the per-sample switch to the top-k hinge; see `smooth_hard_topk_loss`."""

    loss_fn = staticmethod(smooth_hard_topk_loss)
