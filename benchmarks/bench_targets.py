"""Forward + backward time of the top-k loss with the targets beyond class indices, as a ratio to
the same loss with class indices (timed alternately with it), at the ImageNet-1K setting: class
probabilities with two non-zero entries per row (mixup, cutmix), multi-label rows with three true
classes, and label smoothing.

    python benchmarks/bench_targets.py [--threads 2]
"""

from __future__ import annotations

import argparse

import torch
from _timing import paired_ms
from bench_losses import step

import softtopk

BATCH, CLASSES, M, P_K = 500, 1000, 16, [0.2] * 5
METHODS = ("bitonic", "splitter_selection", "neuralsort", "softsort", "lapsum")


def targets(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Class indices, and the other kinds built around them."""
    index = torch.randint(0, CLASSES, (BATCH,), generator=generator)
    other = (index + torch.randint(1, CLASSES, (BATCH,), generator=generator)) % CLASSES
    mix = torch.rand(BATCH, 1, generator=generator)
    probabilities = torch.zeros(BATCH, CLASSES)
    probabilities.scatter_(1, index[:, None], mix).scatter_add_(1, other[:, None], 1 - mix)
    labels = torch.zeros(BATCH, CLASSES, dtype=torch.bool)
    labels[torch.arange(BATCH)[:, None], torch.stack([index, other, (other + 1) % CLASSES], 1)] = True
    return {"indices": index, "2 probabilities": probabilities, "3 labels": labels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kinds = targets(torch.Generator().manual_seed(0))
    logits = torch.randn(BATCH, CLASSES, requires_grad=True)

    print(f"torch {torch.__version__}, {args.threads} threads; B {BATCH}, C {CLASSES}, m {M}; "
          "median ms of forward+backward and the ratio to class indices")
    print("| method | indices ms | 2 probabilities | 3 labels | label smoothing .1 |")
    print("|---|---|---|---|---|")
    for method in METHODS:
        loss = softtopk.TopKCrossEntropyLoss(P_K, method, m=M, distribution="logistic_phi")
        smoothed = softtopk.TopKCrossEntropyLoss(P_K, method, m=M, distribution="logistic_phi",
                                                 label_smoothing=0.1)
        base = step(loss, logits, kinds["indices"])
        base_ms = paired_ms(base, base)[0]
        cells = []
        for fn, target in ((loss, kinds["2 probabilities"]), (loss, kinds["3 labels"]),
                           (smoothed, kinds["indices"])):
            ms, ratio = paired_ms(step(fn, logits, target), base)
            cells.append(f"{ms:.2f} ({ratio:.2f}×)")
        print(f"| {method} | {base_ms:.2f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
