"""Draw docs/engines.png: the rank-probability matrix P of every registered relaxation on the
example of the paper's talk, s = [1, 8, -1, 9, 5] (airplane, panda, goldfish, mammal, husky).

Usage::

    python scripts/plot_engines.py [--beta 1.0] [--transport-beta 30.0] [--out docs/engines.png]

Needs matplotlib (`pip install matplotlib`). The sorting networks use the logistic
sigmoid. The methods that act on raw scores run at `--beta`; the optimal-transport ones act on
standardised scores squashed to (0, 1) with a squared-distance cost, whose scale asks for a larger
inverse temperature (`--transport-beta`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from softtopk import rank_probabilities
from softtopk.relax import RELAXATIONS

CLASSES = ("airplane", "panda", "goldfish", "mammal", "husky")
SCORES = (1.0, 8.0, -1.0, 9.0, 5.0)


def matrices(beta: float, transport_beta: float) -> dict[str, torch.Tensor]:
    """`{title (beta): P [rank, class]}` for every relaxation, k = n = 5."""
    scores = torch.tensor(SCORES, dtype=torch.float64)
    panels = {}
    for name, r in RELAXATIONS.items():
        b = transport_beta if r.family == "optimal transport" else beta
        panels[f"{r.title} (β {b:g})"] = rank_probabilities(scores, len(SCORES), name, b, "logistic").T
    return panels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beta", type=float, default=1.0, help="inverse temperature on raw scores")
    parser.add_argument("--transport-beta", type=float, default=30.0,
                        help="inverse temperature of the optimal-transport methods")
    parser.add_argument("--out", type=Path, default=Path("docs/engines.png"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = matrices(args.beta, args.transport_beta)
    columns = 4
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.1 * rows), squeeze=False)
    for ax, (title, p) in zip(axes.flat, panels.items(), strict=False):
        ax.imshow(p.numpy(), vmin=0, vmax=1, cmap="Blues")
        for (r, c), value in zip(torch.cartesian_prod(torch.arange(5), torch.arange(5)).tolist(),
                                 p.flatten().tolist(), strict=True):
            ax.text(c, r, f"{value:.2f}".lstrip("0") if value < 1 else "1", ha="center", va="center",
                    fontsize=7, color="white" if value > 0.6 else "black")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(5), [f"{n}\n({s:g})" for n, s in zip(CLASSES, SCORES, strict=True)], fontsize=6)
        ax.set_yticks(range(5), [f"rank {r + 1}" for r in range(5)], fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"P[rank, class] for s = {list(SCORES)}", fontsize=11)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=130)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
