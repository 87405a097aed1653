"""The sorting networks' own paths: masked wires against a plain reference, the log-mass path of
the exact loss, and several mass channels in one pass."""

from __future__ import annotations

import math

import pytest
import torch

import softtopk
from softtopk import soft_sort
from softtopk.relax import RELAXATIONS
from softtopk.relax.networks import backend, torch_path
from softtopk.relax.networks.layouts import sorting_network
from softtopk.relax.networks.sigmoids import DISTRIBUTIONS

NETWORKS = ("bitonic", "odd_even", "splitter_selection")


def reference_item_ranks(scores, index, k, kind, beta, distribution, lam):
    """Comparator by comparator in Python floats: a -inf value always goes to the min wire."""
    swap_of = DISTRIBUTIONS[distribution].swap
    rows = []
    for values, item in zip(scores.tolist(), index.tolist(), strict=True):
        mass = [float(i == item) for i in range(len(values))]
        for layer in sorting_network(kind, len(values), k):
            for lo, hi in layer:
                a, b = values[lo], values[hi]
                if a == -math.inf or b == -math.inf:
                    s = 0.0 if a == -math.inf else 1.0
                    values[lo], values[hi] = (a, b) if s == 0 else (b, a)
                else:
                    s = float(swap_of(torch.tensor(b - a, dtype=torch.float64), beta, lam))
                    values[lo], values[hi] = (1 - s) * a + s * b, s * a + (1 - s) * b
                mass[lo], mass[hi] = (1 - s) * mass[lo] + s * mass[hi], s * mass[lo] + (1 - s) * mass[hi]
        rows.append([mass[len(values) - 1 - r] for r in range(k)])
    return torch.tensor(rows, dtype=torch.float64)


def masked_scores(batch: int = 6, n: int = 11, seed: int = 0) -> torch.Tensor:
    """Rows with one, half, the two outer and all but one item masked (as far as `batch` goes)."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, n, generator=g, dtype=torch.float64)
    for row, masked in enumerate([[3], list(range(n // 2)), [0, n - 1], list(range(1, n))][:batch]):
        scores[row, masked] = -math.inf
    return scores


@pytest.mark.parametrize("distribution", ["logistic_phi", "cauchy", "optimal"])
@pytest.mark.parametrize("kind", NETWORKS)
def test_masked_wires_never_win(kind, distribution):
    scores = masked_scores()
    index = torch.tensor([0, 7, 4, 0, 9, 1])
    _, item = RELAXATIONS[kind].bind(1.3, distribution=distribution, art_lambda=0.3)
    expected = reference_item_ranks(scores, index, 4, kind, 1.3, distribution, 0.3)
    torch.testing.assert_close(item(scores, index[:, None], 4)[:, 0], expected, atol=1e-12, rtol=0)
    # The log path's 'optimal' sigmoid leaves out the linear one's 1e-10 guard: 1e-12 apart.
    torch.testing.assert_close(item(scores, index[:, None], 4, log=True)[:, 0].exp(), expected,
                               atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", NETWORKS)
def test_masked_gradients_are_zero_and_checked(kind):
    scores = masked_scores(4, 7).requires_grad_()
    index = torch.tensor([[0, 6], [5, 4], [3, 1], [0, 0]])
    full, item = RELAXATIONS[kind].bind(0.9, distribution="logistic", art_lambda=0.0)
    torch.autograd.gradcheck(lambda s: item(s, index, 3), (scores,))
    torch.autograd.gradcheck(lambda s: item(s, index, 3, log=True).clamp_min(-1e3), (scores,))
    grad, = torch.autograd.grad(full(scores, 3).sum() + item(scores, index, 3, log=True).clamp_min(-50).sum(),
                                scores)
    assert torch.isfinite(grad).all() and (grad[~torch.isfinite(scores)] == 0).all()


@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("kind", NETWORKS)
def test_log_path_equals_log_of_linear_path(kind, distribution):
    scores = torch.randn(5, 13, dtype=torch.float64) * 2
    index = torch.randint(0, 13, (5, 2))
    _, item = RELAXATIONS[kind].bind(1.1, distribution=distribution, art_lambda=0.4)
    linear, log = item(scores, index, 5), item(scores, index, 5, log=True)
    torch.testing.assert_close(log.exp(), linear, atol=1e-10, rtol=0)
    x = scores.clone().requires_grad_()
    torch.autograd.gradcheck(lambda s: item(s, index, 5, log=True), (x,))


@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("kind", NETWORKS)
def test_log_path_keeps_value_and_gradient_where_mass_underflows(kind, distribution):
    """Scores x1e4 with the item ranked last: its top-rank probabilities are far below float32's range."""
    scores = (torch.randn(4, 16, generator=torch.Generator().manual_seed(8)) * 1e4).requires_grad_()
    index = scores.detach().argmin(1, keepdim=True)
    _, item = RELAXATIONS[kind].bind(1.0, distribution=distribution, art_lambda=0.25)
    if distribution in ("logistic", "logistic_phi", "gaussian"):  # light tails: the linear path underflows
        assert (item(scores, index, 5) == 0).all()
    log_p = item(scores, index, 5, log=True)
    assert torch.isfinite(log_p).all()
    (grad,) = torch.autograd.grad(log_p.logsumexp(-1).sum(), scores)
    assert torch.isfinite(grad).all()
    assert (grad.gather(1, index) > 0).all()  # raising the item's score raises its top-k probability


@pytest.mark.parametrize("kind", NETWORKS)
def test_several_items_in_one_pass_equal_one_at_a_time(kind):
    scores = torch.randn(7, 20, dtype=torch.float64)
    index = torch.stack([torch.randperm(20)[:3] for _ in range(7)])
    _, item = RELAXATIONS[kind].bind(2.0, distribution="cauchy", art_lambda=0.25)
    for log in (False, True):
        together = item(scores, index, 4, log=log)
        alone = torch.stack([item(scores, index[:, j : j + 1], 4, log=log)[:, 0] for j in range(3)], dim=1)
        torch.testing.assert_close(together, alone, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["bitonic", "odd_even"])
def test_soft_sort_puts_masked_values_last(kind):
    scores = masked_scores(3, 9)
    out = soft_sort(scores, kind, 1e6, "logistic")
    expected = scores.sort(dim=-1, descending=True).values
    torch.testing.assert_close(out, expected)


def test_backend_is_chosen_once_per_call(monkeypatch):
    """Every entry point asks `backend.choose` once, with the scores, and runs what it returns."""
    calls = []

    def choose(scores):
        calls.append(scores.shape)
        return torch_path

    monkeypatch.setattr(backend, "choose", choose)
    scores = torch.randn(4, 6, requires_grad=True)
    index = torch.tensor([1, 0, 5, 2])
    for method in ("bitonic", "splitter_selection", "odd_even"):
        softtopk.rank_probabilities(scores, 3, method).sum().backward()
        softtopk.rank_probabilities(scores, 3, method, index=index).sum().backward()
        softtopk.topk_cross_entropy(scores, index, [0.5, 0, 0.5], method, eps=0).backward()
        soft_sort(scores, method).sum().backward()
    assert calls == [(4, 6)] * 12


def test_backend_choice_torch_and_errors(monkeypatch):
    """`SOFTTOPK_BACKEND`, read by `backend.choose` alone: 'torch', and 'auto' (the default) off CUDA,
    take the torch path; 'triton' without the triton package and a bad value are errors that say so."""
    scores = torch.randn(2, 5)
    monkeypatch.delenv("SOFTTOPK_BACKEND", raising=False)
    assert backend.choose(scores) is torch_path
    for choice in ("auto", "torch"):
        monkeypatch.setenv("SOFTTOPK_BACKEND", choice)
        assert backend.choose(scores) is torch_path
    monkeypatch.setenv("SOFTTOPK_BACKEND", "triton")
    monkeypatch.setattr(backend, "_triton_launch", lambda: None)  # as if triton did not import
    with pytest.raises(ImportError, match="SOFTTOPK_BACKEND=triton needs the triton package"):
        backend.choose(scores)
    monkeypatch.setenv("SOFTTOPK_BACKEND", "auto")
    assert backend.choose(torch.empty(2, 5, device="meta")) is torch_path
    monkeypatch.setenv("SOFTTOPK_BACKEND", "Triton")
    with pytest.raises(ValueError, match="SOFTTOPK_BACKEND must be one of 'auto', 'torch', 'triton'"):
        softtopk.rank_probabilities(scores, 2, "bitonic")
