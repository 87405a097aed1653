"""Top-k accuracy of classification scores, for class indices and for multi-label sets."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from softtopk._checks import check_index, check_int, check_scores


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, ks: Iterable[int] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose true class is among the k highest scores, for each k in `ks`.

    `logits` is `[N, C]` (N >= 1); `target` is `[N]` integers in `[0, C)`, or a boolean `[N, C]` that
    marks every correct class of a row (multi-label, as ImageNet-ReaL): a row counts as a hit when any
    of its true classes is among the k highest scores, and rows without a true class are left out (the
    ReaL convention; NaN when no row has one). A row counts for k exactly when a true class is among
    `logits.topk(k).indices`, so ties are broken as `torch.topk` breaks them (which, among tied scores,
    may differ from one k to another); a row with a NaN score never counts (`topk` would take NaN for
    the largest score, so a diverged model would score hits). Every k must satisfy `1 <= k <= C`: a
    top-k with k > C is meaningless and is rejected rather than clipped. Returns `{k: accuracy}` in the
    order of `ks`.
    """
    check_scores(logits, "logits")
    if logits.dim() != 2 or logits.shape[0] < 1:
        raise ValueError(f"logits must have shape [N, C] with N >= 1, got {tuple(logits.shape)}")
    n, c = logits.shape
    multi_label = isinstance(target, torch.Tensor) and target.dtype == torch.bool
    if multi_label:
        if target.shape != logits.shape:
            raise ValueError(f"a boolean (multi-label) target must have the logits' shape "
                             f"{tuple(logits.shape)}, got {tuple(target.shape)}")
    else:
        check_index(target, logits.shape[:1], c, "target")
    ks = list(ks)
    if not ks:
        raise ValueError("ks must name at least one k")
    for k in ks:
        check_int(k, "each k of ks")
        if not 1 <= k <= c:
            raise ValueError(f"ks must lie in [1, C] = [1, {c}] (C = number of classes), got k = {k}")
    logits, target = logits.detach(), target.to(logits.device)
    scored = ~logits.isnan().any(1)
    top = {k: logits.topk(k, dim=1).indices for k in dict.fromkeys(ks)}
    if multi_label:
        total = int(target.any(1).sum())
        hits = {k: int((target.gather(1, index).any(1) & scored).sum()) for k, index in top.items()}
        return {k: hits[k] / total if total else float("nan") for k in ks}
    hits = {k: int(((index == target[:, None]).any(1) & scored).sum()) for k, index in top.items()}
    return {k: hits[k] / n for k in ks}
