"""Learned top-k selection, trained end to end through `softtopk.soft_topk_mask`.

Each sample is a set of n items with features x_i in R^d. The target is the sum of a value v*.x_i
over the k items ranked highest by a hidden relevance u*.x_i (u*, v* random unit vectors). The
model scores every item (w.x_i), keeps k of them and predicts the sum of a.x_i over the kept items:
it must learn which items to keep (w ~ u*) from the target alone, through the selection.

Training selects with a soft top-k mask (`--selection soft`, any method of `softtopk.METHODS`), or
with the hard top-k mask and a straight-through estimator (`--selection straight_through`: forward
the hard mask, backward as if the mask were the scores, d mask_i / d s_i = 1). Evaluation always
uses the hard top-k of the learned scores, and reports the test error and the selection precision
(the share of the true top k that the model keeps; chance: k / n).

    python examples/learned_selection.py [--seeds 5] [--steps 400] [--method lapsum]
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass

import torch
from torch import Tensor

from softtopk import METHODS, soft_topk_mask


@dataclass(frozen=True)
class Problem:
    n: int = 16
    k: int = 4
    d: int = 8
    batch: int = 128
    steps: int = 400
    lr: float = 0.05
    inverse_temperature: float = 2.0
    method: str = "lapsum"


def _hard_mask(scores: Tensor, k: int) -> Tensor:
    return torch.zeros_like(scores).scatter(-1, scores.topk(k, dim=-1).indices, 1.0)


def _sample(problem: Problem, truth: tuple[Tensor, Tensor], count: int, g: torch.Generator
            ) -> tuple[Tensor, Tensor, Tensor]:
    """Items `[count, n, d]`, target `[count]` and the true top-k mask `[count, n]`."""
    relevance, value = truth
    items = torch.randn(count, problem.n, problem.d, generator=g)
    chosen = _hard_mask(items @ relevance, problem.k)
    return items, (chosen * (items @ value)).sum(-1), chosen


def train(problem: Problem, selection: str, seed: int) -> dict[str, float]:
    """Train one model; returns the test mean squared error and selection precision (hard top-k)."""
    g = torch.Generator().manual_seed(seed)
    truth = tuple(torch.nn.functional.normalize(torch.randn(2, problem.d, generator=g), dim=-1))
    scorer = torch.zeros(problem.d, requires_grad=True)
    scorer.data.normal_(generator=g).mul_(0.1)
    value = torch.zeros(problem.d, requires_grad=True)
    optimizer = torch.optim.Adam([scorer, value], lr=problem.lr)
    for _ in range(problem.steps):
        items, target, _ = _sample(problem, truth, problem.batch, g)
        scores = items @ scorer
        if selection == "soft":
            mask = soft_topk_mask(scores, problem.k, method=problem.method,
                                  inverse_temperature=problem.inverse_temperature)
        else:  # straight-through: the hard mask forward, the identity backward
            mask = _hard_mask(scores.detach(), problem.k) + scores - scores.detach()
        loss = ((mask * (items @ value)).sum(-1) - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        items, target, chosen = _sample(problem, truth, 4096, g)
        mask = _hard_mask(items @ scorer, problem.k)
        error = ((mask * (items @ value)).sum(-1) - target).square().mean()
        precision = (mask * chosen).sum(-1).mean() / problem.k
    return {"test_mse": float(error), "precision": float(precision)}


def compare(problem: Problem, seeds: int) -> dict[str, dict[str, tuple[float, float]]]:
    """selection -> metric -> (mean, sd) over the seeds."""
    results = {}
    for selection in ("soft", "straight_through"):
        runs = [train(problem, selection, seed) for seed in range(seeds)]
        results[selection] = {metric: (statistics.mean(r[metric] for r in runs),
                                       statistics.stdev(r[metric] for r in runs) if seeds > 1 else 0.0)
                              for metric in runs[0]}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=Problem.steps)
    parser.add_argument("--method", choices=METHODS, default=Problem.method)
    parser.add_argument("--inverse-temperature", type=float, default=Problem.inverse_temperature)
    args = parser.parse_args()
    problem = Problem(steps=args.steps, method=args.method, inverse_temperature=args.inverse_temperature)
    print(f"n = {problem.n}, k = {problem.k}, d = {problem.d}, {problem.steps} steps of batch "
          f"{problem.batch}, {args.seeds} seeds; chance precision {problem.k / problem.n:.2f}")
    print("| training selection | test MSE (hard top-k) | selection precision |")
    print("|---|---|---|")
    for selection, metrics in compare(problem, args.seeds).items():
        name = f"soft mask ({problem.method}, β = {problem.inverse_temperature:g})" if selection == "soft" \
            else "hard top-k, straight-through"
        mse, precision = metrics["test_mse"], metrics["precision"]
        print(f"| {name} | {mse[0]:.3f} ± {mse[1]:.3f} | {precision[0]:.3f} ± {precision[1]:.3f} |")


if __name__ == "__main__":
    main()
