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

two sums of positive terms that are at least 1 (their j = 0 terms), of items at most 1. σ(v) of the k
items is a short recursion; σ(r) of the C items takes one prefix sum per degree, with a hand-written
backward (`_RestSums`) whose rounding grows like 2^k: beyond k = 10 the log-space divide and conquer
`log_elementary_symmetric` (exact for every k, O(C·k²) work) is used instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from softtopk._checks import check_choice, check_index, check_positive_finite, check_scores

REDUCTIONS = ("mean", "sum", "none")
_HARD_GAP = math.log(1000.0)
_FAST_MAX_K = 10  # largest k for `_RestSums`, whose backward loses up to 2^k ulp


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


class _RestSums(torch.autograd.Function):
    """log F_m = log Σ_j w_mj σ_j(r) for the items r_i = exp(scale·x_i − shift) of each row, r_i = 0 for i in
    `excluded`: x [N, C], weights w >= 0 [N, M, k + 1], excluded [N, E], shift [N, 1] -> [N, M].

    Backward: ∂F/∂r_i = Σ_j w_j σ_{j−1}(r without r_i) and σ_e(r without r_i) = Σ_d (−r_i)^d σ_{e−d}(r), so
    the gradient is a polynomial of degree k − 1 in r_i with per-row coefficients, evaluated by Horner's
    rule in k passes over [N, C]. Its alternating terms are bounded by binomial coefficients of k times the
    result when the items are at most 1 and the weights are the σ_j(v) of the loss: up to 2^k ulp are lost
    where k + 1 classes tie and the rest lie far below, and far fewer elsewhere.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, excluded: Tensor, shift: Tensor, scale: float) -> Tensor:
        r = (x * scale).sub_(shift).scatter_(1, excluded, -math.inf).exp_()
        log_sigma = _log_sigma(r, w.shape[2] - 1)
        log_w = w.log()
        log_f = (log_w + log_sigma[:, None]).logsumexp(dim=2)
        ctx.save_for_backward(r, log_w, log_sigma, log_f)
        ctx.scale = scale
        return log_f

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None, None]:
        r, log_w, log_sigma, log_f = ctx.saved_tensors
        k = log_sigma.shape[1] - 1
        grad_w = grad[:, :, None] * (log_sigma[:, None] - log_f[:, :, None]).exp()
        log_rel = log_w - log_f[:, :, None]  # log(w_mj / F_m)
        # coefficient of (−r_i)^d: Σ_m grad_m Σ_{j>d} w_mj σ_{j−1−d} / F_m, times ∂r_i/∂x_i / r_i = scale
        coef = [ctx.scale * (grad[:, :, None] * (log_rel[:, :, d + 1:] + log_sigma[:, None, :k - d]).exp())
                .sum(dim=(1, 2))[:, None] for d in range(k)]
        poly = coef[-1].expand_as(r)
        for c in reversed(coef[:-1]):
            poly = torch.addcmul(c, r, poly, value=-1)
        return r * poly, grad_w, None, None, None


def _log_sigma(r: Tensor, k: int) -> Tensor:
    """log σ_j(r) for j = 0..k of items r >= 0: [N, n] -> [N, k + 1].

    E_j(i) = E_j(i−1) + r_i·E_{j−1}(i−1) over prefixes: one cumulative sum per degree (only the total of
    the last). Each degree is divided by its total σ_j / σ_{j−1} <= n, so that none overflows."""
    ratios = []
    prefix = r
    for j in range(1, k + 1):
        terms = r if j == 1 else r[:, j - 1:] * prefix[:, :-1]
        if j == k:
            ratios.append(terms.sum(dim=1))
        else:
            prefix = terms.cumsum(dim=1)
            ratios.append(prefix[:, -1].clone())
            prefix /= torch.where(ratios[-1] > 0, ratios[-1], 1.0)[:, None]
    log_ratios = torch.stack(ratios, dim=1).log()
    return torch.cat((torch.zeros_like(log_ratios[:, :1]), log_ratios), dim=1).cumsum(dim=1)


def _elementary_symmetric(v: Tensor, k: int) -> Tensor:
    """σ_j(v) for j = 0..k of a few items: [N, m] -> [N, k + 1], multiplying out Π_i (1 + v_i·t)."""
    sigma = F.pad(torch.ones_like(v[:, :1]), (0, k))
    for i in range(v.shape[1]):
        sigma = sigma + F.pad(v[:, i:i + 1] * sigma[:, :-1], (1, 0))
    return sigma


def smooth_topk_loss(input: Tensor, target: Tensor, k: int, tau: float = 1.0, alpha: float = 1.0,
                     reduction: str = "mean") -> Tensor:
    """Smooth top-k SVM loss of logits `input` [N, C] for labels `target` [N]; 1 <= k < C.

    Returns a scalar, or [N] for `reduction='none'`. Half-precision input is computed in float32.
    """
    x, tau, alpha = _checked(input, target, k, tau, alpha, reduction)
    _, index = _largest(x, target, k)
    return _reduce(_smooth(x, index, k, tau, alpha), reduction)


def smooth_hard_topk_loss(input: Tensor, target: Tensor, k: int, tau: float = 1.0, alpha: float = 1.0,
                          reduction: str = "mean") -> Tensor:
    """Smooth top-k SVM loss that switches per sample to the top-k hinge where the k-th and (k+1)-th
    largest logits are at least k·τ·log(1000) apart. Shapes as `smooth_topk_loss`."""
    x, tau, alpha = _checked(input, target, k, tau, alpha, reduction)
    top, index = _largest(x, target, k)
    hard = top[:, k - 1] - top[:, k] >= k * tau * _HARD_GAP
    # where() passes zero gradient to the branch it does not pick; both branches are finite everywhere
    return _reduce(torch.where(hard, _hinge(x, index, k, alpha), _smooth(x, index, k, tau, alpha)), reduction)


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
    picked = x.gather(1, index) * scale  # k largest others, then the label
    shift = picked[:, k - 1:k].detach()  # c; the loss does not depend on it
    if k > _FAST_MAX_K:
        log_sigma = log_elementary_symmetric(_others(x * scale - shift, index[:, k]), k)
        log_ratio = log_sigma[:, k] - log_sigma[:, k - 1]
    else:
        sigma_v = _elementary_symmetric((shift - picked[:, :k]).exp(), k)
        w = torch.stack((sigma_v, F.pad(sigma_v[:, 1:], (0, 1))), dim=1)
        log_a, log_b = _RestSums.apply(x, w, index, shift, scale).unbind(dim=1)
        log_ratio = log_a - log_b
    z = log_ratio + shift[:, 0] - picked[:, k] + alpha / tau
    return tau * torch.logaddexp(z, torch.zeros_like(z))  # softplus, without its linear cut-off


def _hinge(x: Tensor, index: Tensor, k: int, alpha: float) -> Tensor:
    """Per-sample top-k hinge max(0, α + (x'_[k] − x_y) / k): [N, C] -> [N], `index` from `_largest`."""
    kth_other, x_y = x.gather(1, index[:, k - 1:]).unbind(dim=1)
    return (alpha + (kth_other - x_y) / k).clamp(min=0)


def _others(x: Tensor, target: Tensor) -> Tensor:
    """The entries of each row but the target's, in order: [N, C] -> [N, C − 1]."""
    index = torch.arange(x.shape[1] - 1, device=x.device).expand(x.shape[0], -1)
    return x.gather(1, index + (index >= target[:, None]))


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def _check_params(k: object, tau: object, alpha: object, reduction: object) -> tuple[float, float]:
    """Checks of the arguments that do not depend on the data; returns tau and alpha as floats."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1 (and < the number of classes), got {k}")
    tau = check_positive_finite(tau, "tau")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a real number, got {type(alpha).__name__}")
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
    check_choice(reduction, "reduction", REDUCTIONS)
    return tau, float(alpha)


def _checked(input: object, target: object, k: object, tau: object, alpha: object,
             reduction: object) -> tuple[Tensor, float, float]:
    """Validates all arguments; returns the logits (half precision raised to float32), tau, alpha."""
    check_scores(input, "input")
    if input.dim() != 2:
        raise ValueError(f"input must be 2-D logits [N, C], got shape {tuple(input.shape)}")
    n_classes = input.shape[1]
    check_index(target, input.shape[:1], n_classes, "target")
    tau, alpha = _check_params(k, tau, alpha, reduction)
    if k >= n_classes:
        raise ValueError(f"k must be < C, the number of classes (input.shape[1] = {n_classes}): the "
                         f"loss compares the label with k others, so it needs C >= k + 1; got k = {k}")
    x = input.float() if torch.finfo(input.dtype).bits < 32 else input
    return x, tau, alpha


class _TopKSVMLoss(torch.nn.Module):
    """Holds the checked parameters; subclasses name the functional loss they apply."""

    def __init__(self, k: int, tau: float = 1.0, alpha: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.tau, self.alpha = _check_params(k, tau, alpha, reduction)
        self.k, self.reduction = k, reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return self.loss_fn(input, target, self.k, self.tau, self.alpha, self.reduction)

    def extra_repr(self) -> str:
        return f"k={self.k}, tau={self.tau}, alpha={self.alpha}, reduction={self.reduction!r}"


class SmoothTopKLoss(_TopKSVMLoss):
    """Smooth top-k SVM loss, `(input[N, C], target[N]) -> loss`; see `smooth_topk_loss`."""

    loss_fn = staticmethod(smooth_topk_loss)


class SmoothHardTopKLoss(_TopKSVMLoss):
    """Smooth top-k SVM loss with the per-sample switch to the top-k hinge; see `smooth_hard_topk_loss`."""

    loss_fn = staticmethod(smooth_hard_topk_loss)
