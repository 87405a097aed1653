"""The public relaxation API across every method: limits, invariants, fast path, gradients,
shapes, dtypes and bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from softtopk import METHODS, rank_probabilities, soft_sort
from softtopk.relax import DISTRIBUTIONS, RELAXATIONS

NETWORKS = ("bitonic", "odd_even", "splitter_selection")
DOUBLY_STOCHASTIC = (*NETWORKS, "sinkhorn")


def distinct_scores(batch: int, n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Rows of shuffled, well separated values (gaps of 1)."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=g) for _ in range(batch)]).to(dtype) * 1.0


def hard_ranks(scores: torch.Tensor, k: int) -> torch.Tensor:
    """One-hot P[..., i, r] of the exact descending order."""
    order = scores.argsort(dim=-1, descending=True)[..., :k]  # [..., k] item of rank r
    return torch.nn.functional.one_hot(order, scores.shape[-1]).transpose(-1, -2).to(scores.dtype)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [2, 7, 16])
def test_high_steepness_gives_hard_ranks(method, n):
    scores = distinct_scores(4, n, seed=n)
    k = min(5, n)
    p = rank_probabilities(scores, k, method, inverse_temperature=1e4, distribution="logistic")
    torch.testing.assert_close(p, hard_ranks(scores, k), atol=1e-4, rtol=0)


@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("method", NETWORKS)
def test_networks_hard_limit_every_distribution(method, distribution):
    scores = distinct_scores(3, 12, seed=1)
    p = rank_probabilities(scores, 4, method, 1e7, distribution=distribution, art_lambda=0.5)
    torch.testing.assert_close(p, hard_ranks(scores, 4), atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_stochastic_with_k_equal_n(method):
    scores = torch.randn(3, 9, dtype=torch.float64)
    p = rank_probabilities(scores, 9, method, inverse_temperature=0.7)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(dim=-2), torch.ones(3, 9, dtype=torch.float64))  # each rank
    if method in DOUBLY_STOCHASTIC:
        tol = 1e-5 if method == "sinkhorn" else 1e-12
        torch.testing.assert_close(p.sum(dim=-1), torch.ones(3, 9, dtype=torch.float64), atol=tol, rtol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("distribution", ["cauchy", "logistic_phi"])
def test_fast_path_equals_slice_of_full_matrix(method, distribution):
    scores = torch.randn(2, 3, 11, dtype=torch.float64)
    index = torch.randint(0, 11, (2, 3))
    full = rank_probabilities(scores, 5, method, 1.3, distribution)
    fast = rank_probabilities(scores, 5, method, 1.3, distribution, index=index)
    expected = full.gather(-2, index[..., None, None].expand(2, 3, 1, 5)).squeeze(-2)
    torch.testing.assert_close(fast, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("method", NETWORKS)
def test_gradcheck_networks(method, distribution):
    scores = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 5])
    torch.autograd.gradcheck(lambda s: rank_probabilities(s, 3, method, 1.5, distribution, 0.3), (scores,))
    torch.autograd.gradcheck(
        lambda s: rank_probabilities(s, 3, method, 1.5, distribution, 0.3, index=index), (scores,)
    )


@pytest.mark.parametrize("method", [m for m in METHODS if RELAXATIONS[m].family != "sorting network"])
def test_gradcheck_other_methods(method):
    scores = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda s: rank_probabilities(s, 3, method, 1.5), (scores,))
    torch.autograd.gradcheck(
        lambda s: rank_probabilities(s, 3, method, 1.5, index=torch.tensor([1, 4])), (scores,)
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(8,), (3, 8), (2, 3, 8)])
def test_batch_shapes(method, shape):
    scores = torch.randn(shape)
    p = rank_probabilities(scores, 3, method)
    assert p.shape == (*shape, 3) and p.dtype == torch.float32
    flat = rank_probabilities(scores.reshape(-1, 8), 3, method)
    torch.testing.assert_close(p.reshape(-1, 8, 3), flat)
    index = torch.zeros(shape[:-1], dtype=torch.long)
    assert rank_probabilities(scores, 3, method, index=index).shape == (*shape[:-1], 3)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(method, dtype):
    scores = torch.randn(4, 10).to(dtype)
    p = rank_probabilities(scores, 5, method)
    assert p.dtype == dtype and torch.isfinite(p).all()
    reference = rank_probabilities(scores.float(), 5, method)
    torch.testing.assert_close(p.float(), reference, atol=1e-2, rtol=0)


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    batch=st.integers(1, 3),
    n=st.integers(1, 12),
    data=st.data(),
    ties=st.booleans(),
    scale=st.sampled_from([1e-3, 1.0, 1e4]),
)
def test_property_shapes_and_finiteness(method, batch, n, data, ties, scale):
    k = data.draw(st.integers(1, n))
    scores = torch.randn(batch, n)
    if ties:
        scores = scores.round()
    scores = (scores * scale).requires_grad_()
    p = rank_probabilities(scores, k, method, distribution=data.draw(st.sampled_from(sorted(DISTRIBUTIONS))))
    assert p.shape == (batch, n, k)
    assert torch.isfinite(p).all() and (p >= -1e-6).all() and (p <= 1 + 1e-5).all()
    p.sum().backward()
    assert torch.isfinite(scores.grad).all()


@pytest.mark.parametrize("method", ["bitonic", "odd_even"])
@pytest.mark.parametrize("n", [5, 16, 20])
@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
def test_agrees_with_original_network(method, n, distribution):
    from reference import default_float64, difftopk

    net_class = difftopk().DiffTopkNet
    scores = torch.randn(6, n, dtype=torch.float64)
    with default_float64():
        net = net_class(method, n, n, sparse=False, steepness=2.0, distribution=distribution, art_lambda=0.4)
        net.sorting_network = [[t.double() for t in layer] for layer in net.sorting_network]
        _, attribution = net(scores)
    ours = rank_probabilities(scores, n, method, 2.0, distribution, 0.4)
    torch.testing.assert_close(ours, attribution.flip(-1), atol=1e-5, rtol=0)  # its last column is rank 0


@pytest.mark.parametrize("method", ["bitonic", "odd_even"])
def test_soft_sort_agrees_with_diffsort(method):
    diffsort = pytest.importorskip("diffsort")
    scores = torch.randn(5, 12)
    sorter = diffsort.DiffSortNet(method, 12, steepness=3.0, distribution="cauchy")
    expected, _ = sorter(scores)
    torch.testing.assert_close(soft_sort(scores, method, 3.0, "cauchy"), expected.flip(-1), atol=1e-5, rtol=0)


def test_soft_sort_limits_and_gradient():
    scores = torch.randn(3, 10, dtype=torch.float64)
    hard = soft_sort(scores, "bitonic", 1e6, "logistic")
    torch.testing.assert_close(hard, scores.sort(dim=-1, descending=True).values)
    soft = soft_sort(scores, "odd_even", 0.5)
    torch.testing.assert_close(soft.sum(-1), scores.sum(-1))  # mixing preserves the total
    x = scores.clone().requires_grad_()
    torch.autograd.gradcheck(lambda s: soft_sort(s, "bitonic", 0.8, "logistic"), (x,))


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        (dict(method="quicksort"), ValueError, "method"),
        (dict(distribution="uniform"), ValueError, "distribution"),
        (dict(k=0), ValueError, "k"),
        (dict(k=9), ValueError, "k"),
        (dict(k=2.0), TypeError, "k"),
        (dict(inverse_temperature=0.0), ValueError, "inverse_temperature"),
        (dict(inverse_temperature=float("inf")), ValueError, "inverse_temperature"),
        (dict(inverse_temperature=-1), ValueError, "inverse_temperature"),
        (dict(art_lambda=1.0), ValueError, "art_lambda"),
        (dict(art_lambda=-0.1), ValueError, "art_lambda"),
        (dict(index=torch.tensor([0, 8])), ValueError, "index"),
        (dict(index=torch.tensor([0, -1])), ValueError, "index"),
        (dict(index=torch.tensor([0.0, 1.0])), TypeError, "index"),
        (dict(index=torch.tensor([0, 1, 2])), ValueError, "index"),
        (dict(scores=torch.arange(8)), TypeError, "scores"),
        (dict(scores=torch.tensor(1.0)), ValueError, "scores"),
        (dict(scores=[1.0, 2.0]), TypeError, "scores"),
    ],
)
def test_bad_input(kwargs, error, name):
    args = dict(scores=torch.randn(2, 8), k=3, method="bitonic")
    args.update(kwargs)
    with pytest.raises(error, match=name):
        rank_probabilities(**args)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "scores",
    [torch.tensor([[1.0, 1.0, 2.0, 2.0, 0.5]]), torch.full((2, 4), 3.0), torch.randn(3, 12) * 1e4],
    ids=["ties", "all-equal", "huge"],
)
def test_ties_equal_and_huge_scores_stay_finite(method, scores):
    scores = scores.clone().requires_grad_()
    p = rank_probabilities(scores, scores.shape[-1], method, inverse_temperature=10.0)
    p[..., 0].sum().backward()
    assert torch.isfinite(p).all() and torch.isfinite(scores.grad).all()
    torch.testing.assert_close(p.sum(-2), torch.ones(p.shape[0], p.shape[-1]), atol=1e-4, rtol=0)


def _masked(batch: int, n: int, seed: int = 0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores with random items masked (-inf), every row keeping at least one real item, and the mask."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, n, generator=g, dtype=dtype)
    masked = torch.rand(batch, n, generator=g) < 0.4
    masked[torch.arange(batch), torch.randint(0, n, (batch,), generator=g)] = False
    return scores.masked_fill(masked, -torch.inf), masked


@pytest.mark.parametrize("method", METHODS)
def test_masked_items_take_no_rank_of_a_real_item(method):
    scores, masked = _masked(6, 9, seed=3)
    x = scores.clone().requires_grad_()
    p = rank_probabilities(x, 9, method, inverse_temperature=1.5)
    real = (~masked).sum(-1)
    assert torch.isfinite(p).all()
    rank = torch.arange(9)
    real_rank = rank < real[:, None]  # [B, r]
    assert (p.transpose(-1, -2)[real_rank][masked.repeat_interleave(real, 0)] == 0).all()  # masked items
    assert (p.transpose(-1, -2)[~real_rank][(~masked).repeat_interleave(9 - real, 0)] == 0).all()
    torch.testing.assert_close(p.sum(-2), torch.ones(6, 9, dtype=torch.float64), atol=1e-5, rtol=0)
    (grad,) = torch.autograd.grad(p[..., :3].sum() + (p * torch.rand_like(p)).sum(), x)
    assert torch.isfinite(grad).all() and (grad[masked] == 0).all()


@pytest.mark.parametrize("method", METHODS)
def test_fast_path_of_masked_and_real_items_equals_the_full_matrix(method):
    scores, _ = _masked(4, 7, seed=5)
    full = rank_probabilities(scores, 7, method, inverse_temperature=1.5)
    for item in range(7):
        fast = rank_probabilities(scores, 7, method, inverse_temperature=1.5, index=torch.full((4,), item))
        torch.testing.assert_close(fast, full[:, item], atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", [m for m in METHODS if RELAXATIONS[m].family != "sorting network"])
def test_masked_items_equal_removing_them(method):
    """For the relaxations that do not depend on the order of the items; rows mask the same count."""
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(4, 10, generator=g, dtype=torch.float64)
    masked = torch.stack([torch.randperm(10, generator=g) < 3 for _ in range(4)])
    p = rank_probabilities(scores.masked_fill(masked, -torch.inf), 5, method, 1.3)
    kept = scores[~masked].view(4, 7)
    expected = rank_probabilities(kept, 5, method, 1.3)
    torch.testing.assert_close(p[~masked].view(4, 7, 5), expected, atol=1e-6, rtol=0)
    index = torch.stack([row.nonzero()[0] for row in ~masked])  # the first real item of each row
    fast = rank_probabilities(scores.masked_fill(masked, -torch.inf), 5, method, 1.3, index=index[:, 0])
    torch.testing.assert_close(fast, expected[:, 0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_log_fast_path_is_the_log_of_the_fast_path(method):
    scores, _ = _masked(5, 12, seed=2)
    index = torch.stack([torch.nonzero(torch.isfinite(row))[:, 0][:2].repeat(2)[:2] for row in scores])
    _, item = RELAXATIONS[method].bind(1.2, distribution="logistic", art_lambda=0.0)
    linear, log = item(scores, index, 4), item(scores, index, 4, log=True)
    assert linear.shape == (5, 2, 4)
    torch.testing.assert_close(log.exp(), linear, atol=1e-8, rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(method=st.sampled_from(METHODS), n=st.integers(2, 12), seed=st.integers(0, 10**6),
       scale=st.sampled_from([1e-3, 1.0, 1e4]))
def test_property_masked_items_stay_finite(method, n, seed, scale):
    scores, masked = _masked(3, n, seed=seed, dtype=torch.float32)
    x = (scores * scale).requires_grad_()
    k = n
    p = rank_probabilities(x, k, method)
    index = torch.stack([torch.nonzero(~row)[0, 0] for row in masked])
    fast = rank_probabilities(x, k, method, index=index)
    assert torch.isfinite(p).all() and torch.isfinite(fast).all()
    (p.sum() + fast.sum()).backward()
    assert torch.isfinite(x.grad).all() and (x.grad[masked] == 0).all()
