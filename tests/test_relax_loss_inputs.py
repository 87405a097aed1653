"""The top-k loss with the relaxations that need no preselection (SinkhornSort, OT top-k, LapSum)
on hard inputs: ties, huge logits, masked classes, K = C, batch 1, with and without m, with the
default eps and the exact loss (eps = 0)."""

from __future__ import annotations

import pytest
import torch

import softtopk

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # e.g. no convergence

METHODS = ("sinkhorn", "ot_topk", "lapsum")
P_K = [0.5, 0, 0, 0.5]
C = 10


def logits_of(case: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, C, generator=g)
    if case == "ties":
        return (x * 0.5).round()
    if case == "all-equal":
        return torch.zeros(4, C)
    if case == "huge":
        return x * 1e4
    if case == "masked":
        return x.index_fill(1, torch.tensor([2, 7]), -torch.inf)
    return x[:1]  # batch 1


def targets_of(logits: torch.Tensor) -> torch.Tensor:
    return torch.tensor([0, 1, 3, 9])[: logits.shape[0]]  # never a masked class


def loss_and_gradient(method, logits, target, **options):
    x = logits.clone().requires_grad_()
    loss = softtopk.TopKCrossEntropyLoss(options.pop("p_k", P_K), method, **options)(x, target)
    loss.backward()
    return loss, x.grad


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("eps", [1e-7, 0.0])
@pytest.mark.parametrize("m", [None, 6])
@pytest.mark.parametrize("case", ["ties", "all-equal", "huge", "masked", "batch 1"])
def test_finite_loss_and_gradient(method, eps, m, case):
    logits = logits_of(case)
    loss, grad = loss_and_gradient(method, logits, targets_of(logits), m=m, eps=eps)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    if case == "masked":
        assert (grad[:, [2, 7]] == 0).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("eps", [1e-7, 0.0])
def test_masked_classes_are_removed(method, eps):
    logits = logits_of("masked")
    kept = [c for c in range(C) if c not in (2, 7)]
    target = targets_of(logits)
    loss, _ = loss_and_gradient(method, logits, target, eps=eps)
    renumbered = torch.tensor([kept.index(t) for t in target])
    expected, _ = loss_and_gradient(method, logits[:, kept], renumbered, eps=eps)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("eps", [1e-7, 0.0])
def test_k_equal_to_the_number_of_classes(method, eps):
    logits = logits_of("ties")
    loss, grad = loss_and_gradient(method, logits, targets_of(logits), p_k=[0.1] * C, eps=eps)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("m", [None, 6])
@pytest.mark.parametrize("p_k", [P_K, [0, 0, 0, 0, 1]])
def test_exact_loss_pushes_a_last_ranked_true_class_up(method, m, p_k):
    logits = logits_of("huge")
    target = logits.argmin(1)
    _, grad = loss_and_gradient(method, logits, target, m=m, eps=0.0, p_k=p_k)
    assert (grad.gather(1, target[:, None]) < 0).all()


@pytest.mark.parametrize("method", METHODS)
def test_a_row_without_real_items_stays_finite(method):
    """Every class of one row masked: its rank probabilities are finite (the masked items share
    every rank) and nothing NaN reaches the other rows' gradients."""
    scores = torch.randn(2, 6, dtype=torch.float64)
    scores[0] = -torch.inf
    scores.requires_grad_()
    p = softtopk.rank_probabilities(scores, 3, method)
    torch.testing.assert_close(p[0], torch.full((6, 3), 1 / 6, dtype=torch.float64))
    p.square().sum().backward()
    assert torch.isfinite(scores.grad).all() and (scores.grad[0] == 0).all()
