"""What a training run optimises: a loss specification, its parsing and the loss module it builds."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

NETWORK_METHODS = ("bitonic", "splitter_selection", "odd_even")
METHODS = ("softmax", *NETWORK_METHODS, "neuralsort", "softsort", "sinkhorn", "smooth_topk")
DISPLAY_NAMES = {"softmax": "Softmax", "bitonic": "Bitonic DSN", "splitter_selection": "Splitter sel. DSN",
                 "odd_even": "Odd-even DSN", "neuralsort": "NeuralSort", "softsort": "SoftSort",
                 "sinkhorn": "SinkhornSort", "smooth_topk": "Smooth top-k SVM"}


@dataclass(frozen=True)
class LossSpec:
    """A loss and its hyper-parameters, as the command line and sweep files name them.

    `p_k[k-1]` is the probability P_K(k). 'softmax' needs `p_k = (1, 0, ...)`; 'smooth_topk' (Berrada
    et al.) needs a one-hot `p_k`, whose k it optimises, and uses `tau`, `alpha`. The other methods are
    `softtopk.TopKCrossEntropyLoss` relaxations and use the remaining fields.
    """

    method: str
    p_k: tuple[float, ...] = (1.0,)
    inverse_temperature: float = 1.0
    m: int | None = None
    distribution: str = "cauchy"
    art_lambda: float = 0.25
    top1_mode: str = "sm"
    tau: float = 1.0
    alpha: float = 1.0

    def hyperparameters(self) -> dict:
        """The fields this method uses besides `method` and `p_k`."""
        if self.method == "softmax":
            return {}
        if self.method == "smooth_topk":
            return {"tau": self.tau, "alpha": self.alpha}
        used = {"inverse_temperature": self.inverse_temperature, "m": self.m, "top1_mode": self.top1_mode}
        if self.method in NETWORK_METHODS:
            used.update(distribution=self.distribution, art_lambda=self.art_lambda)
        return used

    @property
    def display_name(self) -> str:
        return DISPLAY_NAMES[self.method]


def parse_p_k(text: str) -> tuple[float, ...]:
    """`'.5,0,0,0,.5'` -> `(0.5, 0.0, 0.0, 0.0, 0.5)`; the values must be >= 0 and sum to 1."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"P_K must be comma-separated probabilities such as .5,0,0,0,.5; "
                         f"got {text!r}") from None
    return check_p_k(values)


def check_p_k(values: tuple[float, ...] | list[float]) -> tuple[float, ...]:
    """A tuple of finite probabilities >= 0 that sum to 1 (within 1e-4)."""
    values = tuple(float(v) for v in values)
    if not values or any(not math.isfinite(v) or v < 0 for v in values) or abs(sum(values) - 1) > 1e-4:
        raise ValueError(f"P_K must be probabilities >= 0 that sum to 1, such as .5,0,0,0,.5; got "
                         f"{','.join(f'{v:g}' for v in values) or 'nothing'}")
    return values


def format_p_k(p_k: tuple[float, ...]) -> str:
    """`(0.5, 0, 0, 0, 0.5)` -> `'[.5, 0, 0, 0, .5]'`, the paper's notation."""
    return "[" + ", ".join(f"{p:g}".removeprefix("0") if 0 < p < 1 else f"{p:g}" for p in p_k) + "]"


def make_loss(spec: LossSpec) -> nn.Module:
    """The loss module `(logits [N, C], target [N]) -> scalar mean loss` for `spec`.

    Raises ValueError/TypeError naming the bad field (unknown method, bad P_K, ...).
    """
    if spec.method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {spec.method!r}")
    check_p_k(spec.p_k)
    from softtopk import SmoothTopKLoss, TopKCrossEntropyLoss  # the library's losses, imported on use

    if spec.method == "smooth_topk":
        return SmoothTopKLoss(k=optimised_k(spec), tau=spec.tau, alpha=spec.alpha)
    return TopKCrossEntropyLoss(list(spec.p_k), method=spec.method,
                                inverse_temperature=spec.inverse_temperature, m=spec.m,
                                distribution=spec.distribution, art_lambda=spec.art_lambda,
                                top1_mode=spec.top1_mode)


def optimised_k(spec: LossSpec) -> int:
    """The k of a one-hot P_K (smooth top-k optimises a single k)."""
    nonzero = [i for i, p in enumerate(spec.p_k) if p > 0]
    if len(nonzero) != 1:
        raise ValueError(f"method smooth_topk optimises a single k: P_K must be one-hot such as 0,0,0,0,1; "
                         f"got {format_p_k(spec.p_k)}")
    return nonzero[0] + 1


def selection_weights(spec: LossSpec) -> dict[int, float]:
    """Weights of the top-k accuracies whose sum picks the best validation epoch: the loss's own
    target, the expected top-K accuracy under P_K (top-1 for softmax, top-5 for P_K = [0,0,0,0,1],
    the mean of top-1 and top-5 for [.5,0,0,0,.5])."""
    return {k: p for k, p in enumerate(spec.p_k, start=1) if p > 0}
