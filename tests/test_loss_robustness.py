"""TopKCrossEntropyLoss on the inputs where cross-entropy stays finite: masked (-inf) classes,
ignored targets, saturated logits (the exact loss eps=0), ties, and argument types."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from softtopk import METHODS, TopKCrossEntropyLoss
from softtopk.relax import RELAXATIONS

ORDER_FREE = [m for m in METHODS if RELAXATIONS[m].family != "sorting network"]
# Relaxations of standardised scores: logits x1e4 rank like logits x1, nothing underflows.
SCALE_FREE = [m for m in METHODS if RELAXATIONS[m].family == "optimal transport"]
P_K = [0.5, 0, 0, 0, 0.5]


def loss_fn(method: str, m: int | None = None, **options) -> TopKCrossEntropyLoss:
    options.setdefault("distribution", "logistic_phi")
    return TopKCrossEntropyLoss(options.pop("p_k", P_K), method, options.pop("beta", 1.0), m=m, **options)


def masked_batch(batch: int = 8, classes: int = 20, seed: int = 0, dtype=torch.float32):
    """Logits with about a third of the non-target classes masked, one row masking all but its target
    and two others, and the targets."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, generator=g, dtype=dtype) * 2
    target = torch.randint(0, classes, (batch,), generator=g)
    masked = torch.rand(batch, classes, generator=g) < 0.35
    masked[0] = True
    masked[0, (target[0] + torch.tensor([1, 2])) % classes] = False
    masked[torch.arange(batch), target] = False
    return logits.masked_fill(masked, -torch.inf), target, masked


def value_and_grad(fn, logits, target):
    x = logits.clone().requires_grad_()
    loss = fn(x, target)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


@pytest.mark.parametrize("eps", [1e-7, 0.0])
@pytest.mark.parametrize("m", [None, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", METHODS)
def test_masked_classes_give_finite_loss_and_zero_gradient(method, dtype, m, eps):
    logits, target, masked = masked_batch(dtype=dtype)
    loss, grad = value_and_grad(loss_fn(method, m, eps=eps), logits, target)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert (grad[masked] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", METHODS)
def test_masked_classes_in_half_precision(method, dtype):
    logits, target, masked = masked_batch()
    loss, grad = value_and_grad(loss_fn(method, 8), logits.to(dtype), target)
    assert torch.isfinite(loss) and torch.isfinite(grad).all() and (grad[masked] == 0).all()


@pytest.mark.parametrize("method", METHODS)
def test_with_preselection_masked_classes_are_as_removed(method):
    """Eight of 24 classes masked in every row, none of them a target; m = 8 of the 16 left."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 24, generator=g, dtype=torch.float64)
    masked = torch.stack([torch.randperm(24, generator=g) < 8 for _ in range(6)])
    kept = torch.stack([(~row).nonzero()[:, 0] for row in masked])  # [6, 16] class indices
    target = kept[torch.arange(6), torch.randint(0, 16, (6,), generator=g)]
    fn = loss_fn(method, 8, reduction="none")
    removed_target = (kept == target[:, None]).int().argmax(1)
    expected = fn(logits.gather(1, kept), removed_target)
    actual = fn(logits.masked_fill(masked, -torch.inf), target)
    torch.testing.assert_close(actual, expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("method", ORDER_FREE)
def test_without_preselection_masked_classes_are_as_removed(method):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 12, generator=g, dtype=torch.float64)
    masked = torch.stack([torch.randperm(12, generator=g) < 4 for _ in range(5)])
    kept = torch.stack([(~row).nonzero()[:, 0] for row in masked])
    target = kept[:, 0]
    fn = loss_fn(method, None, reduction="none")
    expected = fn(logits.gather(1, kept), torch.zeros(5, dtype=torch.long))
    actual = fn(logits.masked_fill(masked, -torch.inf), target)
    torch.testing.assert_close(actual, expected, atol=1e-7, rtol=0)


@pytest.mark.parametrize("eps", [1e-7, 0.0])
@pytest.mark.parametrize("method", ["softmax", *METHODS])
def test_masked_target_gives_infinite_loss_as_cross_entropy(method, eps):
    logits, target, _ = masked_batch(4, 10)
    logits[1, target[1]] = -torch.inf
    p_k = [1.0, 0, 0, 0, 0] if method == "softmax" else P_K
    loss, grad = value_and_grad(loss_fn(method, None, p_k=p_k, eps=eps, reduction="none"), logits, target)
    expected = F.cross_entropy(logits, target, reduction="none")
    assert loss[1] == math.inf and torch.isfinite(loss[[0, 2, 3]]).all() and expected[1] == math.inf
    assert torch.isfinite(grad[[0, 2, 3]]).all()


@pytest.mark.parametrize("method", ["softmax", *METHODS])
def test_all_ignored_batch_is_nan_with_zero_gradient(method):
    logits = torch.randn(6, 10)
    logits[2, 0] = -torch.inf  # the stand-in class of ignored rows may be masked
    target = torch.full((6,), -100)
    p_k = [1.0, 0, 0, 0, 0] if method == "softmax" else P_K
    for eps in (1e-7, 0.0):
        loss, grad = value_and_grad(loss_fn(method, p_k=p_k, eps=eps), logits, target)
        assert math.isnan(loss) and math.isnan(F.cross_entropy(logits, target))
        assert (grad == 0).all()
        summed, grad = value_and_grad(loss_fn(method, p_k=p_k, eps=eps, reduction="sum"), logits, target)
        assert summed == 0 and (grad == 0).all()


P_KS = ([0.5, 0, 0, 0, 0.5], [0, 0, 0, 0, 1], [0.2] * 5)


@pytest.mark.parametrize("m", [None, 16])
@pytest.mark.parametrize("method", METHODS)
def test_exact_loss_keeps_pushing_a_target_ranked_last(method, m):
    """Logits x1e4 with the target ranked last: -log p is finite and the target's gradient negative."""
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(8, 40, generator=g) * 1e4
    target = logits.argmin(1)
    for p_k in P_KS:
        for distribution in ("logistic_phi", "logistic", "gaussian"):
            if distribution != "logistic_phi" and RELAXATIONS[method].family != "sorting network":
                continue
            fn = loss_fn(method, m, p_k=p_k, eps=0.0, distribution=distribution, reduction="none")
            loss, grad = value_and_grad(fn, logits, target)
            assert torch.isfinite(loss).all()
            if method not in SCALE_FREE:  # beyond the clamp of the default eps
                assert (loss > 16.2).all()
            assert torch.isfinite(grad).all()
            assert (grad.gather(1, target[:, None]) < 0).all(), (p_k, distribution)


@pytest.mark.parametrize("method", [m for m in METHODS if m not in SCALE_FREE])
def test_default_eps_clamps_where_the_exact_loss_does_not(method):
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(8, 40, generator=g) * 1e4
    loss = loss_fn(method, 16, reduction="none")(logits, logits.argmin(1))
    torch.testing.assert_close(loss, torch.full_like(loss, -math.log(1e-7)), atol=1e-3, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_exact_loss_is_the_default_without_the_epsilon(method):
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(16, 30, generator=g, dtype=torch.float64)
    target = torch.randint(0, 30, (16,), generator=g)
    ce = F.cross_entropy(logits, target, reduction="none")
    for mode in ("sm", "smce", "sort"):
        exact = loss_fn(method, eps=0.0, top1_mode=mode, reduction="none")(logits, target)
        default = loss_fn(method, top1_mode=mode, reduction="none")(logits, target)
        share = 0.5 if mode == "smce" else 0.0  # smce: P_K(1) CE + (1 - P_K(1)) (-log p of k >= 2)
        p = torch.exp(-(exact - share * ce) / (1 - share))
        expected = share * ce + (1 - share) * -torch.log(p * (1 - 2e-7) + 1e-7)
        torch.testing.assert_close(default, expected, atol=1e-9, rtol=0)


def test_exact_loss_with_p_k_one_is_cross_entropy():
    logits = torch.randn(10, 7, dtype=torch.float64) * 5
    target = torch.randint(0, 7, (10,))
    fn = TopKCrossEntropyLoss([1.0], "bitonic", eps=0.0)
    torch.testing.assert_close(fn(logits, target), F.cross_entropy(logits, target), atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_gradient_at_ties_is_bounded(method):
    """All-equal logits (a zero-initialised head) against randn logits; logistic_phi is exempt (its
    slope at exact ties is the activation replacement trick itself)."""
    g = torch.Generator().manual_seed(7)
    target = torch.randint(0, 100, (32,), generator=g)
    for m in (None, 16):
        distributions = ["cauchy", "logistic", "gaussian", "reciprocal", "optimal"]
        for distribution in distributions if RELAXATIONS[method].family == "sorting network" else ["cauchy"]:
            fn = loss_fn(method, m, distribution=distribution, p_k=[0.2] * 5)
            _, at_random = value_and_grad(fn, torch.randn(32, 100, generator=g), target)
            _, at_ties = value_and_grad(fn, torch.zeros(32, 100), target)
            _, near_ties = value_and_grad(fn, torch.randn(32, 100, generator=g) * 1e-6, target)
            assert torch.isfinite(at_ties).all()
            assert at_ties.norm() <= 100 * at_random.norm(), (m, distribution)
            assert near_ties.norm() <= 100 * at_random.norm(), (m, distribution)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        (dict(ignore_index=1.5), TypeError, "ignore_index"),
        (dict(ignore_index=True), TypeError, "ignore_index"),
        (dict(eps=-1e-3), ValueError, "eps"),
        (dict(eps=0.5), ValueError, "eps"),
        (dict(eps="0"), TypeError, "eps"),
        (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
    ],
)
def test_bad_arguments(kwargs, error, name):
    with pytest.raises(error, match=name):
        TopKCrossEntropyLoss(P_K, "bitonic", **kwargs)


@pytest.mark.parametrize("target", [torch.tensor([0, -1]), torch.tensor([0, 10])])
def test_softmax_validates_targets_like_the_relaxations(target):
    for method, p_k in (("softmax", [1.0]), ("bitonic", P_K)):
        with pytest.raises(ValueError, match="target"):
            TopKCrossEntropyLoss(p_k, method)(torch.randn(2, 10), target)


@settings(max_examples=60, deadline=None)
@given(method=st.sampled_from(METHODS), m=st.sampled_from([None, 6]), eps=st.sampled_from([1e-7, 0.0]),
       scale=st.sampled_from([1e-4, 1.0, 1e4]), seed=st.integers(0, 10**6), ignored=st.integers(0, 4),
       batch=st.integers(1, 4))
def test_property_masks_ignores_and_scales_stay_finite(method, m, eps, scale, seed, ignored, batch):
    logits, target, masked = masked_batch(batch, 12, seed)
    target[:ignored] = -100
    x = (logits * scale).requires_grad_()
    loss = loss_fn(method, m, eps=eps, reduction="sum")(x, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and (x.grad[masked] == 0).all()
    assert (x.grad[:ignored] == 0).all()


def test_padded_preselection_equals_topk():
    """The CPU path pads rows to 64 m columns; rows with fewer than m finite logits get -inf classes."""
    from softtopk.losses import _preselect

    logits = torch.randn(6, 700)
    logits[0, 5:] = -torch.inf  # five finite logits, m = 16
    target = torch.tensor([[2], [0], [699], [5], [6], [7]])
    kept = _preselect(logits, target, 16)
    others = logits.scatter(1, target, -torch.inf).topk(15, dim=1).values
    torch.testing.assert_close(kept, torch.cat([logits.gather(1, target), others], dim=1))
