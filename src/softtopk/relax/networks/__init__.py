"""The differentiable sorting and selection networks: their registry records and entry points.

The wing: `layouts` (the comparator layouts), `sigmoids` (the comparator sigmoids), `torch_path`
(autograd Functions from torch ops), `triton_maths` / `triton_kernels` / `triton_launch` (the fused
Triton backend) and `backend` (which of the two runs a call, chosen once here, at the entry point).
"""

from __future__ import annotations

import torch

from ..relaxation import Relaxation
from . import backend, torch_path
from .sigmoids import DISTRIBUTIONS

Tensor = torch.Tensor


def rank_matrix(scores: Tensor, k: int, kind: str, beta: float, distribution: str, lam: float) -> Tensor:
    """P[b, i, r] = probability that item i ends on the wire of rank r.  [B, n] -> [B, n, k]"""
    chosen = backend.choose(scores)
    n = scores.shape[-1]
    linear, masked = torch_path.linear_channels(scores)
    mass = torch.eye(n, dtype=scores.dtype, device=scores.device).unsqueeze(-1).expand(n, n, scores.shape[0])
    out = chosen.linear_network(torch.cat([linear, mass], dim=1), (kind, n, k), DISTRIBUTIONS[distribution],
                                beta, lam, masked)
    return out[:, linear.shape[1]:].permute(2, 1, 0)


def item_ranks(scores: Tensor, index: Tensor, k: int, kind: str, beta: float, distribution: str, lam: float,
               log: bool = False) -> Tensor:
    """P[b, index[b, j], r] for r < k (log P with `log`).  [B, n], [B, J] -> [B, J, k]"""
    chosen = backend.choose(scores)
    key = (kind, scores.shape[1], k)
    return chosen.item_ranks(scores, index, key, DISTRIBUTIONS[distribution], beta, lam, log)


def sorted_values(scores: Tensor, kind: str, beta: float, distribution: str, lam: float) -> Tensor:
    """Relaxed values in descending order; masked (-inf) items end last, as -inf.  [B, n] -> [B, n]"""
    chosen = backend.choose(scores)
    n = scores.shape[-1]
    linear, masked = torch_path.linear_channels(scores)
    out = chosen.linear_network(linear, (kind, n, n), DISTRIBUTIONS[distribution], beta, lam, masked)
    values = out[:, 0]
    if masked:
        values = values.masked_fill(out[:, 1] > 0, -torch.inf)
    return values.t()


def _record(kind: str, title: str, cost: str, reference: str) -> Relaxation:
    def full(scores: Tensor, k: int, beta: float, distribution: str, art_lambda: float) -> Tensor:
        return rank_matrix(scores, k, kind, beta, distribution, art_lambda)

    def item(scores: Tensor, index: Tensor, k: int, beta: float, distribution: str, art_lambda: float,
             log: bool = False) -> Tensor:
        return item_ranks(scores, index, k, kind, beta, distribution, art_lambda, log)

    return Relaxation(kind, title, "sorting network", full, item, ("distribution", "art_lambda"),
                      cost=cost, output="the labelled items' rows, one mass channel each", needs_m=True,
                      reference=reference)


_DSN = "Petersen et al., ICML 2021 / ICLR 2022"
BITONIC = _record("bitonic", "Bitonic DSN", "O(n log² n)", _DSN)
ODD_EVEN = _record("odd_even", "Odd-even DSN", "O(n²)", _DSN)
SPLITTER_SELECTION = _record("splitter_selection", "Splitter sel. DSN", "O(n log K)",
                             "Petersen, Kuehne, Borgelt, Deussen, ICML 2022")
