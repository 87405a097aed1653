from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from softtopk import smooth_topk
from softtopk.smooth_topk import (
    SmoothHardTopKLoss,
    SmoothTopKLoss,
    log_elementary_symmetric,
    smooth_hard_topk_loss,
    smooth_topk_loss,
)

# the reference implementation instantiates an autograd.Function, which torch deprecates
pytestmark = pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")

LOSSES = (smooth_topk_loss, smooth_hard_topk_loss)
F64 = torch.float64


def _is_hard(x: torch.Tensor, k: int, tau: float) -> torch.Tensor:
    """Rows where the k-th and (k+1)-th largest logits are at least k·τ·log(1000) apart: [N, C] -> [N]."""
    top = x.topk(k + 1, dim=1).values
    return top[:, k - 1] - top[:, k] >= k * tau * math.log(1000.0)


@pytest.fixture(params=["fast", "exact"])
def path(request, monkeypatch) -> str:
    """Runs a test with the prefix-sum path (k <= 10) and with the log-space divide and conquer."""
    if request.param == "exact":
        monkeypatch.setattr(smooth_topk, "_FAST_MAX_K", 0)
    return request.param


def _tied_rows(n: int, c: int, k: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """k + 2 nearly tied logits and the rest far below: where the fast backward rounds worst."""
    x = torch.full((n, c), -1e4, dtype=dtype)
    x[:, :k + 2] = torch.randn(n, k + 2, dtype=dtype) * 1e-6
    return x


def _subset_loss(x: torch.Tensor, target: torch.Tensor, k: int, tau: float, alpha: float) -> torch.Tensor:
    """The smooth top-k SVM by enumerating every k-subset S of the classes: [N, C] -> [N]."""
    subsets = torch.tensor(list(itertools.combinations(range(x.shape[1]), k)))  # [S, k]
    means = x[:, subsets].mean(dim=2)  # [N, S]
    has_label = (subsets[None] == target[:, None, None]).any(dim=2)  # [N, S]
    margin = torch.where(has_label, 0.0, alpha)
    everything = ((margin + means) / tau).logsumexp(dim=1)
    with_label = (means / tau).masked_fill(~has_label, -math.inf).logsumexp(dim=1)
    return tau * (everything - with_label)


# ---------------------------------------------------------------------------------------------
# The elementary symmetric polynomials and the loss formula, against brute force
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 11])
def test_log_elementary_symmetric_matches_enumeration(n: int) -> None:
    torch.manual_seed(n)
    log_x = torch.randn(3, n, dtype=F64) * 3
    for k in range(1, n + 1):
        expected = [torch.zeros(3, dtype=F64)] + [
            torch.stack([log_x[:, list(s)].sum(1) for s in itertools.combinations(range(n), j)], 1)
            .logsumexp(1) for j in range(1, k + 1)]
        torch.testing.assert_close(log_elementary_symmetric(log_x, k), torch.stack(expected, 1),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_log_sigma_matches_enumeration_including_zero_items(k: int) -> None:
    torch.manual_seed(k)
    r = torch.rand(4, 9, dtype=F64)
    r[1, 2:] = 0  # two positive items: sigma_j = 0 for j > 2
    r[2] = 0
    r[3, :5] *= 1e-30
    expected = torch.stack([torch.ones(4, dtype=F64)] + [
        torch.stack([r[:, list(s)].prod(1) for s in itertools.combinations(range(9), j)], 1).sum(1)
        for j in range(1, k + 1)], 1).log()
    torch.testing.assert_close(smooth_topk._log_sigma(r, k), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 6, 10])
def test_margin_gradcheck(k: int) -> None:
    """The hand-written backward, on spread logits and on rows with far apart ones."""
    torch.manual_seed(k)
    x = torch.randn(4, 13, dtype=F64) * torch.tensor([[0.5], [2.0], [5.0], [200.0]], dtype=F64)
    target = torch.tensor([0, 12, 5, 5])
    index = smooth_topk._largest(x, target, k)[1]
    margin = smooth_topk._Margin.apply
    assert torch.autograd.gradcheck(lambda z: margin(z, index, 0.3), x.requires_grad_(),
                                    eps=1e-4, atol=1e-8, rtol=1e-6)


def test_largest_others_skip_the_label() -> None:
    torch.manual_seed(8)
    x = torch.randn(50, 12)
    x[:10, 3] = x[:10].amax(1) + 1  # label largest
    x[10:20, 3] = x[10:20].amin(1) - 1  # label smallest
    target = torch.full((50,), 3)
    target[20:] = torch.randint(0, 12, (30,))
    top, index = smooth_topk._largest(x, target, 4)
    assert torch.equal(top, x.topk(5, 1).values)
    assert torch.equal(index[:, 4], target)
    others = x.masked_fill(torch.nn.functional.one_hot(target, 12).bool(), -math.inf)
    assert torch.equal(x.gather(1, index[:, :4]), others.topk(4, 1).values)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_fast_path_matches_exact_path(k: int, monkeypatch) -> None:
    """Values and gradients of the prefix-sum path against the log-space divide and conquer, on spread
    rows and on nearly tied ones, in float64 and (gradients to 1e-4 of their largest entry) in float32."""
    torch.manual_seed(k)
    x = torch.cat((torch.randn(8, 40, dtype=F64) * torch.logspace(-1, 3, 8, dtype=F64)[:, None],
                   _tied_rows(8, 40, k)))
    target = torch.randint(0, 40, (16,))
    target[8:12] = 0  # among the tied logits
    results = {}
    for name, max_k, dtype in (("fast64", 10, F64), ("fast32", 10, torch.float32), ("exact", 0, F64)):
        monkeypatch.setattr(smooth_topk, "_FAST_MAX_K", max_k)
        xd = x.to(dtype, copy=True).requires_grad_()
        loss = smooth_topk_loss(xd, target, k, 0.5, 1.0, "none")
        loss.sum().backward()
        results[name] = (loss.detach().double(), xd.grad.double())
    loss, grad = results["exact"]
    torch.testing.assert_close(results["fast64"][0], loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results["fast64"][1], grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results["fast32"][0], loss, rtol=1e-5, atol=1e-5)
    assert (results["fast32"][1] - grad).abs().max() <= 1e-4 * grad.abs().max()


@pytest.mark.parametrize("c", [1000, 200_000])
def test_many_equal_classes_in_float32(c: int) -> None:
    """σ_10 of 2e5 equal items is ~1e46: beyond float32, unless the items are scaled as they are."""
    k, tau, alpha = 10, 0.5, 1.0
    x = torch.zeros(2, c, requires_grad=True)
    loss = smooth_topk_loss(x, torch.tensor([0, c - 1]), k, tau, alpha, "none")
    loss.sum().backward()
    z = math.log((c - k) / k) + alpha / tau  # log σ_k − log σ_{k−1} of C − 1 ones
    torch.testing.assert_close(loss, torch.full((2,), tau * math.log1p(math.exp(z))), rtol=1e-5, atol=0)
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad.sum(dim=1), torch.zeros(2), atol=1e-5, rtol=0)  # shift invariance


@pytest.mark.parametrize("k,tau,alpha", [(1, 1.0, 1.0), (2, 0.5, 0.0), (3, 0.1, 2.5), (6, 2.0, 1.0)])
def test_smooth_loss_and_gradient_match_subset_enumeration(k: int, tau: float, alpha: float,
                                                            path: str) -> None:
    torch.manual_seed(k)
    x = (torch.randn(5, 7, dtype=F64) * 2).requires_grad_()
    target = torch.tensor([0, 6, 3, 3, 1])
    ours = smooth_topk_loss(x, target, k, tau, alpha, reduction="none")
    (grad,) = torch.autograd.grad(ours.sum(), x)
    x_ref = x.detach().requires_grad_()
    expected = _subset_loss(x_ref, target, k, tau, alpha)
    expected.sum().backward()
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, x_ref.grad, rtol=1e-10, atol=1e-12)


def test_hard_variant_is_the_top_k_hinge_on_switched_rows() -> None:
    torch.manual_seed(0)
    k, tau, alpha = 2, 0.5, 0.7
    x = torch.randn(40, 6, dtype=F64) * torch.logspace(-1, 2, 40, dtype=F64)[:, None]
    target = torch.randint(0, 6, (40,))
    hard = _is_hard(x, k, tau)
    assert 0 < hard.sum() < 40
    loss = smooth_hard_topk_loss(x, target, k, tau, alpha, reduction="none")
    others = x.masked_fill(torch.nn.functional.one_hot(target, 6).bool(), -math.inf)
    hinge = (alpha + (others.topk(k, 1).values[:, -1] - x[torch.arange(40), target]) / k).clamp(min=0)
    torch.testing.assert_close(loss[hard], hinge[hard], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss[~hard], smooth_topk_loss(x, target, k, tau, alpha, "none")[~hard])


# ---------------------------------------------------------------------------------------------
# Parity with the original implementation (difftopk 0.2.0), which fixes alpha = 1
# ---------------------------------------------------------------------------------------------

def _parity_logits(n: int, c: int, k: int, tau: float, regime: str, seed: int) -> torch.Tensor:
    """Rows spread from far below to far above the hard switch ('mixed'), or one row on one side."""
    gen = torch.Generator().manual_seed(seed)
    scale = {"smooth": torch.tensor([0.3]), "hard": torch.tensor([3000.0]),
             "mixed": torch.logspace(-1, 3.5, n)}[regime]
    return torch.randn(n, c, generator=gen, dtype=F64) * (k * tau * scale[:, None]).to(F64)


def _directional_fd(fn, x: torch.Tensor, v: torch.Tensor, eps: float = 1e-5) -> float:
    return float((fn(x + eps * v) - fn(x - eps * v)) / (2 * eps))


PARITY_CASES = [(n, c, k, tau, regime, seed)
                for n, regimes in ((1, ("smooth", "hard")), (64, ("mixed",)))
                for c, seeds in ((20, (0, 1)), (1000, (2,)))
                for k in (1, 5) for tau in (0.1, 1.0) for regime in regimes for seed in seeds]


@pytest.mark.parametrize("hard_variant", [False, True], ids=["smooth", "smooth_hard"])
@pytest.mark.parametrize("n,c,k,tau,regime,seed", PARITY_CASES)
def test_parity_with_difftopk(hard_variant: bool, n: int, c: int, k: int, tau: float, regime: str,
                              seed: int) -> None:
    """Equal values; gradients against central differences of the original's value along random
    directions. Its own backward is not the reference: it sums a truncated series of nearly
    cancelling terms (errors ~1e-4 relative) and for k = 1 differentiates the constant log σ_0."""
    difftopk = pytest.importorskip("difftopk")
    x = _parity_logits(n, c, k, tau, regime, seed)
    target = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))
    hard = _is_hard(x, k, tau)
    if regime == "mixed":
        assert 0 < hard.sum() < n
    else:
        assert int(hard.sum()) == (n if regime == "hard" else 0)

    ours_cls, ref_cls = ((SmoothHardTopKLoss, difftopk.SmoothHardTopKLoss) if hard_variant
                         else (SmoothTopKLoss, difftopk.SmoothTopKLoss))
    ref = ref_cls(c, k, tau)
    x_ours = x.clone().requires_grad_()
    loss = ours_cls(k, tau)(x_ours, target)
    loss.backward()
    ref_value = ref(x.clone(), target)
    torch.testing.assert_close(loss.detach(), ref_value.detach(), rtol=1e-10, atol=1e-12)

    gen = torch.Generator().manual_seed(seed + 100)
    for _ in range(2):
        v = torch.randn(n, c, generator=gen, dtype=F64)
        fd = _directional_fd(lambda z: ref(z, target).detach(), x, v)
        scale = float(x_ours.grad.norm() * v.norm())
        assert abs(float((x_ours.grad * v).sum()) - fd) <= 1e-6 * scale + 1e-9

    if hard_variant and regime == "hard":  # the original's hinge gradient is exact
        x_ref = x.clone().requires_grad_()
        ref(x_ref, target).backward()
        torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,alpha", [(1, 0.0), (3, 2.5)])
def test_alpha_matches_difftopk_building_blocks(k: int, alpha: float) -> None:
    """The original's modules fix alpha = 1; its per-sample functions take any alpha."""
    smooth_topk = pytest.importorskip("difftopk.smooth_topk")
    torch.manual_seed(3)
    x = torch.randn(6, 12, dtype=F64) * 4
    target = torch.randint(0, 12, (6,))
    labels = torch.arange(12)
    ref_smooth = smooth_topk.Topk_Smooth_SVM(labels, k, 0.5, alpha)(x.clone(), target)
    torch.testing.assert_close(smooth_topk_loss(x, target, k, 0.5, alpha, "none"), ref_smooth)
    x_far = x * 1e3
    assert _is_hard(x_far, k, 0.5).all()
    ref_hinge = smooth_topk.Topk_Hard_SVM(labels, k, alpha)(x_far, target)
    torch.testing.assert_close(smooth_hard_topk_loss(x_far, target, k, 0.5, alpha, "none"), ref_hinge)


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_float32_agrees_with_float64(loss_fn) -> None:
    torch.manual_seed(4)
    x = torch.randn(16, 50, dtype=F64) * torch.logspace(-1, 3, 16, dtype=F64)[:, None]
    target = torch.randint(0, 50, (16,))
    grads = []
    for dtype in (F64, torch.float32):
        xd = x.to(dtype, copy=True).requires_grad_()
        loss = loss_fn(xd, target, 5, 0.1, reduction="none")
        loss.sum().backward()
        assert loss.dtype == dtype
        grads.append((loss.double(), xd.grad.double()))
    (loss32, grad32), (loss64, grad64) = grads[1], grads[0]
    torch.testing.assert_close(loss32, loss64, rtol=1e-4, atol=1e-5)
    assert (grad32 - grad64).abs().max() <= 1e-4 * grad64.abs().max()


# ---------------------------------------------------------------------------------------------
# Gradients, reductions, dtypes, properties
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss_fn", LOSSES)
@pytest.mark.parametrize("k", [1, 2, 5])
def test_gradcheck(loss_fn, k: int) -> None:
    torch.manual_seed(k)
    x = torch.randn(4, 6, dtype=F64) * torch.tensor([[0.5], [2.0], [5.0], [200.0]], dtype=F64)
    target = torch.tensor([0, 5, 2, 2])
    assert torch.autograd.gradcheck(lambda z: loss_fn(z, target, k, 0.3, 0.8, "none"),
                                    x.requires_grad_())


@pytest.mark.parametrize("loss_fn,module", [(smooth_topk_loss, SmoothTopKLoss),
                                            (smooth_hard_topk_loss, SmoothHardTopKLoss)])
def test_reductions_and_module(loss_fn, module) -> None:
    torch.manual_seed(5)
    x = torch.randn(7, 9) * 20
    target = torch.randint(0, 9, (7,))
    per_sample = loss_fn(x, target, 3, 0.5, 1.5, reduction="none")
    assert per_sample.shape == (7,)
    torch.testing.assert_close(loss_fn(x, target, 3, 0.5, 1.5, reduction="sum"), per_sample.sum())
    torch.testing.assert_close(loss_fn(x, target, 3, 0.5, 1.5), per_sample.mean())
    torch.testing.assert_close(module(3, 0.5, 1.5, "none")(x, target), per_sample)
    assert repr(module(3, tau=0.5)) == f"{module.__name__}(k=3, tau=0.5, alpha=1.0, reduction='mean')"


@pytest.mark.parametrize("loss_fn", LOSSES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_computed_in_float32(loss_fn, dtype: torch.dtype) -> None:
    torch.manual_seed(6)
    x = (torch.randn(8, 30) * 1e3).to(dtype).requires_grad_()
    target = torch.randint(0, 30, (8,))
    loss = loss_fn(x, target, 5, 0.1)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()
    torch.testing.assert_close(loss, loss_fn(x.detach().float(), target, 5, 0.1))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5), c=st.integers(2, 30), data=st.data(),
       scale=st.sampled_from([0.0, 1.0, 30.0, 1e4]), tau=st.sampled_from([0.05, 1.0, 3.0]),
       dtype=st.sampled_from([torch.float32, F64]), seed=st.integers(0, 2**16))
def test_finite_nonnegative_and_shift_invariant(n: int, c: int, data, scale: float, tau: float,
                                                dtype: torch.dtype, seed: int) -> None:
    k = data.draw(st.integers(1, c - 1), label="k")
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, generator=gen) * scale + 1.5).to(dtype)  # scale 0: all logits equal
    target = torch.randint(0, c, (n,), generator=gen)
    for loss_fn in LOSSES:
        xg = x.clone().requires_grad_()
        loss = loss_fn(xg, target, k, tau, reduction="none")
        loss.sum().backward()
        assert loss.shape == (n,)
        assert torch.isfinite(loss).all() and (loss >= 0).all()
        assert torch.isfinite(xg.grad).all()
        shifted = loss_fn(x + 7.0, target, k, tau, reduction="none")
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        torch.testing.assert_close(shifted, loss, rtol=tol, atol=tol * (1 + scale))


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

X = torch.zeros(3, 5)
Y = torch.tensor([0, 4, 2])


@pytest.mark.parametrize("loss_fn", LOSSES)
@pytest.mark.parametrize("kwargs,error,name", [
    ({"input": [[0.0, 1.0]]}, TypeError, "input"),
    ({"input": torch.zeros(3, 5, dtype=torch.int64)}, TypeError, "input"),
    ({"input": torch.zeros(15)}, ValueError, "input"),
    ({"input": torch.zeros(3, 5, 1)}, ValueError, "input"),
    ({"target": Y.float()}, TypeError, "target"),
    ({"target": torch.tensor([0, 1])}, ValueError, "target"),
    ({"target": torch.tensor([0, 5, 1])}, ValueError, "target"),
    ({"target": torch.tensor([0, -1, 1])}, ValueError, "target"),
    ({"k": 0}, ValueError, "k"),
    ({"k": 5}, ValueError, "k must be < C"),
    ({"k": 2.0}, TypeError, "k"),
    ({"k": True}, TypeError, "k"),
    ({"tau": 0.0}, ValueError, "tau"),
    ({"tau": -1.0}, ValueError, "tau"),
    ({"tau": math.inf}, ValueError, "tau"),
    ({"tau": "1"}, TypeError, "tau"),
    ({"alpha": -0.5}, ValueError, "alpha"),
    ({"alpha": math.nan}, ValueError, "alpha"),
    ({"alpha": None}, TypeError, "alpha"),
    ({"reduction": "avg"}, ValueError, "reduction"),
])
def test_bad_input(loss_fn, kwargs: dict, error: type, name: str) -> None:
    args = {"input": X, "target": Y, "k": 2, "tau": 1.0, "alpha": 1.0, "reduction": "mean"} | kwargs
    with pytest.raises(error, match=name):
        loss_fn(**args)


@pytest.mark.parametrize("module", [SmoothTopKLoss, SmoothHardTopKLoss])
@pytest.mark.parametrize("kwargs,error,name", [
    ({"k": 0}, ValueError, "k"), ({"k": 1.5}, TypeError, "k"), ({"tau": 0}, ValueError, "tau"),
    ({"alpha": -1}, ValueError, "alpha"), ({"reduction": None}, ValueError, "reduction"),
])
def test_bad_module_arguments(module, kwargs: dict, error: type, name: str) -> None:
    with pytest.raises(error, match=name):
        module(**({"k": 2} | kwargs))


@pytest.mark.parametrize("loss_fn,module", [(smooth_topk_loss, SmoothTopKLoss),
                                            (smooth_hard_topk_loss, SmoothHardTopKLoss)])
def test_weight_and_ignore_index_as_cross_entropy(loss_fn, module) -> None:
    """The weighted mean over the targets that are not ignored, as in `cross_entropy`."""
    torch.manual_seed(6)
    x = torch.randn(8, 9, dtype=F64) * 3
    target = torch.randint(0, 9, (8,))
    target[[1, 6]] = 3
    weight = torch.rand(9, dtype=F64) + 0.1
    per_sample = loss_fn(x, target, 2, 0.5, 1.0, "none")
    ignored = target.clone()
    ignored[[1, 6]] = -1
    w = weight[target] * (ignored != -1)
    expected = (per_sample * w).sum() / w.sum()
    torch.testing.assert_close(loss_fn(x, ignored, 2, 0.5, 1.0, weight=weight, ignore_index=-1), expected)
    torch.testing.assert_close(module(2, 0.5, weight=weight, ignore_index=-1)(x, ignored), expected)
    none = loss_fn(x, ignored, 2, 0.5, 1.0, "none", weight=weight, ignore_index=-1)
    torch.testing.assert_close(none, per_sample * w)


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_spatial_inputs_as_cross_entropy(loss_fn) -> None:
    x = torch.randn(2, 7, 3, 2, dtype=F64)
    target = torch.randint(0, 7, (2, 3, 2))
    out = loss_fn(x, target, 2, reduction="none")
    assert out.shape == (2, 3, 2)
    flat = loss_fn(x.movedim(1, -1).reshape(-1, 7), target.reshape(-1), 2, reduction="none")
    torch.testing.assert_close(out.reshape(-1), flat)


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_masked_classes_and_ignored_rows(loss_fn) -> None:
    x = torch.randn(5, 10)
    x[:, 2] = -math.inf
    x[0, :7] = -math.inf  # three real classes: the target is surely in the top 5, loss 0
    x[3, 4] = -math.inf  # a masked target: +inf, as cross-entropy
    x.requires_grad_()
    target = torch.tensor([8, 1, 3, 4, 5])
    loss = loss_fn(x, target, 5, reduction="none")
    assert loss[0] == 0 and loss[3] == math.inf and torch.isfinite(loss[[1, 2, 4]]).all()
    loss[[0, 1, 2, 4]].sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[:, 2] == 0).all()
    y = torch.randn(4, 10, requires_grad=True)
    nothing = loss_fn(y, torch.full((4,), -100), 3)
    nothing.backward()
    assert math.isnan(nothing) and (y.grad == 0).all()
