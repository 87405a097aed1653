"""The loss of a run: the methods the command line offers, and the loss module of a run's settings.

The methods are 'softmax' (cross-entropy), the library's relaxations (`softtopk.METHODS`) and
'smooth_topk' (the smooth top-k SVM of Berrada et al., the paper's baseline).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

import softtopk
from softtopk.relax import NETWORK_METHODS as KINDS
from softtopk.relax import RELAXATIONS

METHODS = ("softmax", *softtopk.METHODS, "smooth_topk")
NETWORK_METHODS = KINDS  # the sorting networks, whose comparators take distribution and art_lambda
_DISPLAY_NAMES = {"softmax": "Softmax", "smooth_topk": "Smooth top-k SVM",
                  **{name: relaxation.title for name, relaxation in RELAXATIONS.items()}}


def display_name(method: str) -> str:
    """The name of a method in tables and plots (the paper's where it has one)."""
    return _DISPLAY_NAMES.get(method, method)


def format_p_k(p_k) -> str:
    """`(0.5, 0, 0, 0, 0.5)` -> `'[.5, 0, 0, 0, .5]'`, the paper's notation."""
    return "[" + ", ".join(f"{p:g}".removeprefix("0") if 0 < p < 1 else f"{p:g}" for p in p_k) + "]"


def optimised_k(p_k) -> int:
    """The k of a one-hot P_K (smooth top-k optimises a single k)."""
    nonzero = [i for i, p in enumerate(p_k) if p > 0]
    if len(nonzero) != 1:
        raise ValueError(f"method smooth_topk optimises a single k: p_k must be one-hot such as 0,0,0,0,1; "
                         f"got {format_p_k(p_k)}")
    return nonzero[0] + 1


def make_loss(settings: Mapping[str, object]) -> nn.Module:
    """The loss module `(logits [N, C], target) -> mean loss` of a run's settings; `target` is `[N]`
    class indices or, for softmax and the relaxations, `[N, C]` probabilities. Raises ValueError or
    TypeError (from the library, naming its arguments) on bad settings."""
    method, p_k = settings["method"], tuple(settings["p_k"])
    if method == "softmax":
        if p_k[0] < 1 - 1e-4:
            raise ValueError(f"method='softmax' is plain cross-entropy and needs p_k = 1,0,...; got "
                             f"{format_p_k(p_k)}")
        return nn.CrossEntropyLoss(label_smoothing=settings["label_smoothing"])
    if method == "smooth_topk":
        return softtopk.SmoothHardTopKLoss(k=optimised_k(p_k), tau=settings["tau"], alpha=settings["alpha"])
    options = {key: settings[key] for key in ("distribution", "art_lambda") if key in settings}
    if settings["label_smoothing"]:  # passed only when used
        options["label_smoothing"] = settings["label_smoothing"]
    return softtopk.TopKCrossEntropyLoss(list(p_k), method=method, m=settings["m"],
                                         inverse_temperature=settings["inverse_temperature"],
                                         top1_mode=settings["top1_mode"], **options)


def check_targets(loss: nn.Module, num_classes: int, probabilities: bool) -> None:
    """Apply `loss` once to a small batch of `num_classes` logits with the run's kind of target
    (class indices, or probability rows for mixup/CutMix), so that a loss that cannot take them
    fails before training; raises ValueError."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, num_classes, generator=generator)
    target = torch.arange(4) % num_classes
    if probabilities:
        target = torch.softmax(torch.randn(4, num_classes, generator=generator), dim=1)
    try:
        loss(logits, target)
    except (TypeError, ValueError, RuntimeError) as error:
        kind = "probability targets (mixup, cutmix)" if probabilities else "class indices"
        raise ValueError(f"the loss does not take {kind} here: {error}") from None


def selection_weights(p_k) -> dict[int, float]:
    """Weights of the top-k accuracies whose sum is the P_K-weighted score of `--select score`: the
    loss's own target, the expected top-K accuracy under P_K (top-1 for softmax, top-5 for
    [0,0,0,0,1], the mean of top-1 and top-5 for [.5,0,0,0,.5])."""
    return {k: p for k, p in enumerate(p_k, start=1) if p > 0}
