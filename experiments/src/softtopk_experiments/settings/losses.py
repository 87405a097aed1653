"""The loss of a run: the methods the command line offers, and the loss module of a run's settings.

The methods are 'softmax' (cross-entropy), the library's relaxations (`softtopk.relax.METHODS`) and
'smooth_topk' (the smooth top-k SVM of Berrada et al., the paper's baseline). Building the loss is
where its values are checked: by the library, whose errors name its arguments (= the options' names).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

import softtopk
from softtopk.distributed import vocab_parallel_linear_topk_cross_entropy
from softtopk.relax import METHODS as RELAXATION_METHODS
from softtopk.relax import RELAXATIONS

METHODS = ("softmax", *RELAXATION_METHODS, "smooth_topk")
FUSED_METHODS = ("softmax", *RELAXATION_METHODS)  # the methods that have a fused (and a sharded) head
FUSED_FROM = 10_000  # classes from which `head` auto fuses
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
        raise ValueError(f"`method` smooth_topk optimises a single k: `p_k` must be one-hot such as "
                         f"0,0,0,0,1; got {format_p_k(p_k)}")
    return nonzero[0] + 1


def _library_arguments(settings: Mapping[str, object]) -> tuple[list[float], dict]:
    """`(p_k, keyword arguments)` of the library's loss for softmax or a relaxation."""
    options = {key: settings[key] for key in ("method", "m", "inverse_temperature", "distribution",
                                              "art_lambda", "top1_mode") if key in settings}
    if settings["label_smoothing"]:  # passed only when used
        options["label_smoothing"] = settings["label_smoothing"]
    return list(settings["p_k"]), options


def make_loss(settings: Mapping[str, object]) -> nn.Module:
    """The loss module `(logits [N, C], target) -> mean loss` of a run's settings; `target` is `[N]`
    class indices or, for softmax and the relaxations, `[N, C]` probabilities. Softmax is the
    library's `method='softmax'` (torch's cross-entropy). Raises ValueError or TypeError (from the
    library, naming its arguments) on bad settings."""
    if settings["method"] == "smooth_topk":
        return softtopk.SmoothHardTopKLoss(k=optimised_k(settings["p_k"]), tau=settings["tau"],
                                           alpha=settings["alpha"])
    p_k, options = _library_arguments(settings)
    return softtopk.TopKCrossEntropyLoss(p_k, **options)


class ShardedHeadLoss(nn.Module):
    """`make_head_loss`'s loss with the head's classes sharded over the processes of torch.distributed
    (`softtopk.distributed.vocab_parallel_linear_topk_cross_entropy` on the world group):
    `(features [N, H], local_weight [C_r, H], target [N], local_bias [C_r]) -> mean loss` of the whole
    head, the same on every process; the gradient of `features` is summed over the processes."""

    def __init__(self, p_k: list[float], **options: object) -> None:
        super().__init__()
        self.p_k, self.options = p_k, options

    def forward(self, features: torch.Tensor, local_weight: torch.Tensor, target: torch.Tensor,
                local_bias: torch.Tensor | None = None) -> torch.Tensor:
        return vocab_parallel_linear_topk_cross_entropy(features, local_weight, target, self.p_k, local_bias,
                                                        **self.options)


def make_head_loss(settings: Mapping[str, object], sharded: bool = False) -> nn.Module:
    """The loss of `make_loss` fused with a linear head, `(features [N, H], weight [C, H], target,
    bias [C]) -> mean loss`, computed without the `[N, C]` logits (`softtopk.LinearTopKCrossEntropyLoss`);
    with `sharded`, the same with this process's block of the head's classes (`ShardedHeadLoss`).
    Softmax and the relaxations only."""
    p_k, options = _library_arguments(settings)
    return (ShardedHeadLoss if sharded else softtopk.LinearTopKCrossEntropyLoss)(p_k, **options)


def choose_head(head: str, method: str, num_classes: int, m: int | None = None) -> tuple[str, str]:
    """`(head, why)`: the `head` option resolved ('auto' -> 'fused' from `FUSED_FROM` classes on, for
    the methods that have a fused head, else 'logits'). ValueError for 'fused' or 'sharded' with
    another method, and for 'sharded' with a relaxation whose top-m preselection `m` is not an int
    below the number of classes (the sharded loss ranks only the top-m candidates of all classes)."""
    if head in ("fused", "sharded") and method not in FUSED_METHODS:
        raise ValueError(f"`head` {head} needs softmax or a relaxation of softtopk, not `method` {method}")
    if head == "sharded" and method != "softmax" and (m is None or m >= num_classes):
        raise ValueError(f"`head` sharded needs `m` (the top-m preselection) below the number of classes "
                         f"({num_classes:,}) with a relaxation: the sharded loss ranks the top-m candidates "
                         f"of all classes, never every class (e.g. `m` 16, the paper's); got "
                         f"{'none' if m is None else m}")
    if head != "auto":
        return head, "given"
    fused = method in FUSED_METHODS and num_classes >= FUSED_FROM
    return ("fused" if fused else "logits"), f"auto ({num_classes:,} classes)"


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
