"""The operators soft_topk_mask, soft_rank and soft_sort on every method: hard limits, sums, `dim`,
the properties the README claims per method, finiteness at extremes, gradcheck, half precision,
masked items, argument errors, the direct forms against the rank matrix, compile and the device path."""

from __future__ import annotations

import math

import pytest
import torch
from compiled import assert_compiles_like_eager
from hypothesis import given, settings
from hypothesis import strategies as st

from softtopk import METHODS, rank_probabilities, soft_rank, soft_sort, soft_topk_mask
from softtopk._checks import device_path
from softtopk.relax import RELAXATIONS, lapsum, ot_topk

NETWORKS = ("bitonic", "splitter_selection", "odd_even")
TRANSPORT = ("sinkhorn", "ot_topk")
#: Per method: (P doubly stochastic, operators permutation-equivariant). For every method the mask
#: sums to k and the soft ranks to n (n - 1) / 2, as every rank's probabilities over the items sum
#: to 1. The README's operator table states the same.
PROPERTIES = {
    "bitonic": (True, False),
    "splitter_selection": (True, False),
    "odd_even": (True, False),
    "neuralsort": (False, True),
    "softsort": (False, True),
    "sinkhorn": (True, True),
    "ot_topk": (True, True),
    "lapsum": (True, True),
}
#: An inverse temperature at which each method is hard on items spaced 1 apart (n = 6).
HARD_BETA = {**dict.fromkeys(NETWORKS, 1e6), "neuralsort": 100.0, "softsort": 100.0, "sinkhorn": 1e4,
             "ot_topk": 1e4, "lapsum": 100.0}


def _sum_tolerance(method: str, dtype: torch.dtype = torch.float32) -> float:
    return 1e-4 if method in TRANSPORT else (1e-5 if dtype == torch.float32 else 1e-10)


def _operators(method: str, k: int, beta: float):
    """The three operators of a method as functions of x alone (along the last dimension)."""
    return {
        "mask": lambda x: soft_topk_mask(x, k, method=method, inverse_temperature=beta),
        "rank": lambda x: soft_rank(x, method=method, inverse_temperature=beta),
        "sort": lambda x: soft_sort(x, method, beta),
    }


def _spaced(*shape: int, seed: int = 0) -> torch.Tensor:
    """Rows that are random permutations of 0, 1, ..., n - 1 (float64)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g).argsort(-1).double()


def test_properties_table_covers_every_method():
    assert set(PROPERTIES) == set(METHODS) == set(HARD_BETA)


@pytest.mark.parametrize("method", METHODS)
def test_hard_limits(method):
    x = _spaced(2, 3, 6, seed=1)
    beta = HARD_BETA[method]
    hard_rank = x.argsort(-1, descending=True).argsort(-1).double()
    torch.testing.assert_close(soft_topk_mask(x, 2, method=method, inverse_temperature=beta),
                               (hard_rank < 2).double(), atol=1e-3, rtol=0)
    torch.testing.assert_close(soft_rank(x, method=method, inverse_temperature=beta), hard_rank,
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(soft_sort(x, method, beta), x.sort(-1, descending=True).values,
                               atol=1e-3, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_mask_sums_to_k_and_lies_in_unit_interval(method):
    x = 3 * torch.randn(4, 2, 9, generator=torch.Generator().manual_seed(2))
    for k in (1, 4, 9):
        mask = soft_topk_mask(x, k, method=method, inverse_temperature=2.0)
        assert mask.shape == x.shape and mask.dtype == x.dtype
        assert mask.min() >= 0
        if PROPERTIES[method][0]:  # NeuralSort's and SoftSort's masks may exceed 1
            assert mask.max() <= 1 + 1e-5
        torch.testing.assert_close(mask.sum(-1), torch.full((4, 2), float(k)), atol=_sum_tolerance(method),
                                   rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_dim_equals_the_transposed_call(method):
    x = torch.randn(6, 3, 2, generator=torch.Generator().manual_seed(3))
    for name, op in _operators(method, 2, 1.5).items():
        along_0 = {"mask": lambda: soft_topk_mask(x, 2, method=method, inverse_temperature=1.5, dim=0),
                   "rank": lambda: soft_rank(x, method=method, inverse_temperature=1.5, dim=0),
                   "sort": lambda: soft_sort(x, method, 1.5, dim=0)}[name]()
        torch.testing.assert_close(along_0, op(x.movedim(0, -1)).movedim(-1, 0), msg=name)


@pytest.mark.parametrize("method", METHODS)
def test_claimed_properties(method):
    """Each claim of PROPERTIES is checked both ways: where it is claimed it holds, else it fails."""
    doubly, equivariant = PROPERTIES[method]
    n = 7
    x = torch.randn(3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    p = rank_probabilities(x, n, method, 1.0)
    assert torch.allclose(p.sum(-2), torch.ones(3, n, dtype=torch.float64), atol=1e-6)  # per rank: always
    assert torch.allclose(p.sum(-1), torch.ones(3, n, dtype=torch.float64), atol=1e-6) == doubly
    ranks = soft_rank(x, method=method)
    torch.testing.assert_close(ranks.sum(-1), torch.full((3,), n * (n - 1) / 2, dtype=torch.float64))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(5))
    same = [torch.allclose(op(x[:, perm]), op(x)[:, perm], atol=1e-6)
            for op in (lambda t: soft_topk_mask(t, 3, method=method), lambda t: soft_rank(t, method=method))]
    same.append(torch.allclose(soft_sort(x[:, perm], method), soft_sort(x, method), atol=1e-6))
    assert all(same) if equivariant else not any(same)


@pytest.mark.parametrize("method", METHODS)
def test_finite_values_and_gradients_at_extremes(method):
    g = torch.Generator().manual_seed(6)
    weights = torch.randn(2, 5, generator=g)
    tied = torch.tensor([[1.0, 1.0, 1.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    for scale in (1e-4, 1.0, 1e4):
        for x0 in (scale * torch.randn(2, 5, generator=g), scale * tied):
            for beta in (1e-3, 1e3):
                for name, op in _operators(method, 2, beta).items():
                    x = x0.clone().requires_grad_()
                    out = op(x)
                    (out * weights).sum().backward()
                    assert torch.isfinite(out).all(), (name, scale, beta)
                    assert torch.isfinite(x.grad).all(), (name, scale, beta)


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck(method):
    x = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7)).requires_grad_()
    for name, op in _operators(method, 2, 0.7).items():
        assert torch.autograd.gradcheck(op, (x,)), name


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_within_rounding_of_float32(method, dtype):
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(8)).to(dtype)
    for name, op in _operators(method, 2, 1.0).items():
        out = op(x)
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), op(x.float()), atol=3e-2, rtol=1e-2, msg=name)


@pytest.mark.parametrize("method", METHODS)
def test_masked_items_are_never_selected(method):
    x = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    x[0, 1] = x[1, 0] = x[1, 4] = -math.inf
    x.requires_grad_()
    masked = x.detach() == -math.inf
    real = (~masked).sum(-1).double()
    for k in (2, 5):
        mask = soft_topk_mask(x, k, method=method)
        assert (mask[masked] == 0).all()
        torch.testing.assert_close(mask.sum(-1), real.clamp(max=k), atol=_sum_tolerance(method, x.dtype),
                                   rtol=0)
        (mask * torch.arange(6.0)).sum().backward()
        assert torch.isfinite(x.grad).all() and (x.grad[masked] == 0).all()
        x.grad = None
    ranks = soft_rank(x, method=method)
    torch.testing.assert_close(ranks[masked], ((real + 6 - 1) / 2)[masked.nonzero()[:, 0]])
    assert (ranks[~masked] < real[:, None].expand(2, 6)[~masked]).all()
    values = soft_sort(x, method)
    assert (values[:, -1] == -math.inf).all() and (values[1, -2] == -math.inf)
    assert torch.isfinite(values[0, :5]).all() and torch.isfinite(values[1, :4]).all()


def test_networks_sort_their_own_values_like_the_rank_matrix():
    """A network's relaxed values are the rank matrix applied to the values (it mixes both alike)."""
    x = torch.randn(3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    for method in NETWORKS:
        p = rank_probabilities(x, 8, method, 0.5, "logistic")
        torch.testing.assert_close(soft_sort(x, method, 0.5, "logistic"), torch.einsum("bir,bi->br", p, x))


@pytest.mark.parametrize("method", NETWORKS)
def test_network_options_reach_the_network(method):
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(11))
    cauchy = soft_topk_mask(x, 2, method=method)
    logistic = soft_topk_mask(x, 2, method=method, distribution="logistic")
    phi = soft_topk_mask(x, 2, method=method, distribution="logistic_phi", art_lambda=0.5)
    assert not torch.allclose(cauchy, logistic) and not torch.allclose(logistic, phi)
    torch.testing.assert_close(logistic, rank_probabilities(x, 2, method, 1.0, "logistic").sum(-1))


@pytest.mark.parametrize(("call", "error", "name"), [
    (lambda x: soft_topk_mask(x, 0, method="lapsum"), ValueError, "k"),
    (lambda x: soft_topk_mask(x, 6, method="lapsum"), ValueError, "k"),
    (lambda x: soft_topk_mask(x, 2.0, method="lapsum"), TypeError, "k"),
    (lambda x: soft_topk_mask(x, True, method="lapsum"), TypeError, "k"),
    (lambda x: soft_topk_mask(x, 2, method="lapsum", dim=2), ValueError, "dim"),
    (lambda x: soft_rank(x, method="lapsum", dim=-3), ValueError, "dim"),
    (lambda x: soft_sort(x, "lapsum", dim=1.0), TypeError, "dim"),
    (lambda x: soft_rank(x, method="quicksort"), ValueError, "method"),
    (lambda x: soft_sort(x, "quicksort"), ValueError, "method"),
    (lambda x: soft_topk_mask(x, 2, method="neuralsort", distribution="logistic"), TypeError, "distribution"),
    (lambda x: soft_rank(x, method="bitonic", distribution="normal"), ValueError, "distribution"),
    (lambda x: soft_rank(x, method="bitonic", art_lambda=1.5), ValueError, "art_lambda"),
    (lambda x: soft_rank(x, method="lapsum", inverse_temperature=0.0), ValueError, "inverse_temperature"),
    (lambda x: soft_rank(x.long(), method="lapsum"), TypeError, "x"),
    (lambda x: soft_rank(x.tolist(), method="lapsum"), TypeError, "x"),
    (lambda x: soft_rank(x[0, 0], method="lapsum"), ValueError, "x"),
])
def test_bad_arguments_name_themselves(call, error, name):
    with pytest.raises(error, match=rf"\b{name}\b"):
        call(torch.randn(3, 5))


@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), data=st.data())
def test_any_batch_shape_and_dim(shape, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    k = data.draw(st.integers(1, shape[dim]))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    mask = soft_topk_mask(x, k, method="lapsum", dim=dim)
    ranks = soft_rank(x, method="softsort", dim=dim)
    values = soft_sort(x, "bitonic", dim=dim)
    assert mask.shape == ranks.shape == values.shape == x.shape
    torch.testing.assert_close(mask.sum(dim), torch.full_like(mask.sum(dim), float(k)), atol=1e-5, rtol=0)
    torch.testing.assert_close(values.sum(dim), x.sum(dim))  # a doubly stochastic mix of x


def test_empty_batch():
    x = torch.randn(0, 4)
    for method in ("lapsum", "bitonic", "sinkhorn"):
        assert soft_topk_mask(x, 2, method=method).shape == soft_rank(x, method=method).shape == (0, 4)


# The direct forms of LapSum and OT top-k against their rank matrices.

def _with_masked(seed: int) -> torch.Tensor:
    x = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    x[0, 2] = x[0, 5]  # a tie
    x[1, 1] = x[2, 0] = x[2, 3] = x[2, 6] = -math.inf
    return x


@pytest.mark.parametrize("relaxation", [lapsum, ot_topk])
@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_direct_mask_equals_the_summed_rank_matrix(relaxation, k):
    x = _with_masked(12).requires_grad_()
    direct = relaxation.topk_mask(x, k, 1.5)
    full = relaxation.rank_matrix(x, k, 1.5).sum(-1)
    real = x.detach() > -math.inf
    torch.testing.assert_close(direct[real], full[real])
    weights = torch.randn(3, 7, dtype=torch.float64)
    grad_direct, = torch.autograd.grad((direct.masked_fill(~real, 0) * weights).sum(), x)
    grad_full, = torch.autograd.grad((full.masked_fill(~real, 0) * weights).sum(), x)
    torch.testing.assert_close(grad_direct, grad_full)


def test_lapsum_ranks_are_pairwise_laplace_cdfs():
    x = _with_masked(13).requires_grad_()
    beta = 1.7
    diff = beta * (x[:, None, :] - x[:, :, None])  # [b, i, j] = beta (x_j - x_i)
    both_masked = (x[:, None, :] == -math.inf) & (x[:, :, None] == -math.inf)
    diff = torch.where(both_masked, 0.0, diff)
    cdf = torch.where(diff <= 0, 0.5 * torch.exp(diff.clamp(max=0)), 1 - 0.5 * torch.exp(-diff.clamp(min=0)))
    expected = cdf.sum(-1) - 0.5
    torch.testing.assert_close(lapsum.soft_ranks(x, beta), expected)
    torch.autograd.gradcheck(lambda t: lapsum.soft_ranks(t, beta), (x,))


def test_lapsum_ranks_differ_from_the_expected_rank_of_its_threshold_matrix():
    """The closed form is LapSum's own soft rank, not sum_r r P[i, r] of the threshold P."""
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    expected_rank = rank_probabilities(x, 2, "lapsum") @ torch.arange(2.0, dtype=torch.float64)
    torch.testing.assert_close(expected_rank, torch.tensor([[0.5 * math.exp(-0.5), 1 - 0.5 * math.exp(-0.5)]],
                                                           dtype=torch.float64))
    pairwise = torch.tensor([[0.5 * math.exp(-1), 1 - 0.5 * math.exp(-1)]], dtype=torch.float64)
    torch.testing.assert_close(soft_rank(x, method="lapsum"), pairwise)


def test_only_lapsum_and_ot_topk_have_direct_forms():
    assert {name for name, r in RELAXATIONS.items() if r.topk_mask is not None} == {"lapsum", "ot_topk"}
    assert {name for name, r in RELAXATIONS.items() if r.soft_ranks is not None} == {"lapsum"}


@pytest.mark.parametrize("method", METHODS)
def test_device_path_gives_the_same_result(method):
    """The path of GPU tensors (no host reads) equals the CPU path, masked items included."""
    x = _with_masked(14).float()
    ops = _operators(method, 3, 1.0)
    if method in TRANSPORT:  # a fixed number of iterations there: slow on a CPU
        ops = {"mask": ops["mask"]}
    expected = {name: op(x) for name, op in ops.items()}
    with device_path():
        for name, op in ops.items():
            torch.testing.assert_close(op(x), expected[name], msg=name, atol=1e-5, rtol=1e-5)


def test_lapsum_direct_forms_compile_whole():
    """The new code paths; the others are the relaxations' own, compiled in their tests and the loss's."""
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(15))
    weights = torch.randn(4, 6, generator=torch.Generator().manual_seed(16))
    ops = _operators("lapsum", 2, 1.0)

    def weighted(t: torch.Tensor) -> torch.Tensor:
        return (ops["mask"](t) * weights).sum() + (ops["rank"](t) * weights).sum()

    assert_compiles_like_eager(weighted, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lapsum_soft_sort_compiles_whole(dtype):
    """LapSum's soft sort goes through its rank matrix with k = n: every item is a top item there."""
    x = torch.randn(3, 5, dtype=dtype, generator=torch.Generator().manual_seed(17))
    weights = torch.randn(3, 5, dtype=dtype, generator=torch.Generator().manual_seed(18))
    assert_compiles_like_eager(lambda t: (soft_sort(t, method="lapsum") * weights).sum(), x)
