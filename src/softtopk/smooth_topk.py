"""Smooth top-k SVM losses (Berrada, Zisserman, Kumar, ICLR 2018): the "smooth top-5" baseline.

For one sample with logits x[C], label y, s = x / (k·τ) and s' the C − 1 scaled logits other than y,

    loss = τ·log Σ_{|S|=k} exp((α·[y ∉ S] + mean_{j∈S} x_j) / τ)
           − τ·log Σ_{|S|=k, y∈S} exp(mean_{j∈S} x_j / τ)
         = τ · softplus(log σ_k(e^{s'}) − log σ_{k−1}(e^{s'}) − s_y + α/τ),

with σ_j the j-th elementary symmetric polynomial, computed in log space. As τ → 0 it tends to the
top-k hinge max(0, α + (x'_[k] − x_y) / k), x'_[k] the k-th largest logit other than x_y.
The hard variant uses that hinge for the samples whose k-th and (k+1)-th largest logits (label
included) are at least k·τ·log(1000) apart, i.e. where the best k-subset outweighs every other one by
a factor of at least 1000 (the switching rule of the authors' implementation).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from softtopk._checks import check_choice, check_index, check_positive_finite, check_scores

REDUCTIONS = ("mean", "sum", "none")
_HARD_GAP = math.log(1000.0)


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


def smooth_topk_loss(input: Tensor, target: Tensor, k: int, tau: float = 1.0, alpha: float = 1.0,
                     reduction: str = "mean") -> Tensor:
    """Smooth top-k SVM loss of logits `input` [N, C] for labels `target` [N]; 1 <= k < C.

    Returns a scalar, or [N] for `reduction='none'`. Half-precision input is computed in float32.
    """
    x, tau, alpha = _checked(input, target, k, tau, alpha, reduction)
    return _reduce(_smooth(x, target, k, tau, alpha), reduction)


def smooth_hard_topk_loss(input: Tensor, target: Tensor, k: int, tau: float = 1.0, alpha: float = 1.0,
                          reduction: str = "mean") -> Tensor:
    """Smooth top-k SVM loss that switches per sample to the top-k hinge where the k-th and (k+1)-th
    largest logits are at least k·τ·log(1000) apart. Shapes as `smooth_topk_loss`."""
    x, tau, alpha = _checked(input, target, k, tau, alpha, reduction)
    top = x.topk(k + 1, dim=1).values
    hard = top[:, k - 1] - top[:, k] >= k * tau * _HARD_GAP
    # the smooth branch sees zeros in the hard rows, so nothing there can reach the gradient
    smooth = _smooth(torch.where(hard[:, None], torch.zeros_like(x), x), target, k, tau, alpha)
    return _reduce(torch.where(hard, _hinge(x, target, k, alpha), smooth), reduction)


def _smooth(x: Tensor, target: Tensor, k: int, tau: float, alpha: float) -> Tensor:
    """Per-sample smooth top-k SVM loss: [N, C] -> [N]."""
    # the loss is invariant to shifting a row; shifting its largest logit to 0 keeps float32 accurate
    s = (x - x.detach().amax(dim=1, keepdim=True)) / (k * tau)
    log_sigma = log_elementary_symmetric(_others(s, target), k)
    s_y = s.gather(1, target[:, None])[:, 0]
    z = log_sigma[:, k] - log_sigma[:, k - 1] - s_y + alpha / tau
    return tau * torch.logaddexp(z, torch.zeros_like(z))  # softplus, without its linear cut-off


def _hinge(x: Tensor, target: Tensor, k: int, alpha: float) -> Tensor:
    """Per-sample top-k hinge max(0, α + (x'_[k] − x_y) / k): [N, C] -> [N]."""
    kth_other = _others(x, target).topk(k, dim=1).values[:, -1]
    x_y = x.gather(1, target[:, None])[:, 0]
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
