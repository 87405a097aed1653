"""TopKCrossEntropyLoss: agreement with the original, PyTorch loss conventions, numerics, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from softtopk import METHODS, TopKCrossEntropyLoss, rank_probabilities, topk_cross_entropy
from softtopk.relax import DISTRIBUTIONS

P_KS = ([0.2] * 5, [0.5, 0, 0, 0, 0.5], [0, 0, 0, 0, 1], [0.25, 0, 0, 0, 0.75])
MODES = ("sm", "smce", "sort")
NETWORKS = ("bitonic", "splitter_selection", "odd_even")


def loss_and_grad(fn, logits, target):
    x = logits.clone().requires_grad_()
    loss = fn(x, target)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def assert_matches_original(method, classes, m, batch, distribution, mode, p_k, seed, dtype=torch.float64,
                            rtol=1e-5):
    from reference import default_float64, original_loss

    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, classes, generator=g, dtype=torch.float64) * 2).to(dtype)
    target = torch.randint(0, classes, (batch,), generator=g)
    with default_float64() if dtype == torch.float64 else torch.no_grad():
        original = original_loss(method, 0.7, p_k, classes, m, distribution, 0.3, mode)
    with default_float64() if dtype == torch.float64 else torch.enable_grad():
        expected, expected_grad = loss_and_grad(original, logits, target)
    ours, grad = loss_and_grad(
        lambda x, y: topk_cross_entropy(x, y, p_k, method, 0.7, m, distribution, 0.3, mode), logits, target
    )
    torch.testing.assert_close(ours, expected, rtol=rtol, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=rtol * expected_grad.abs().max().item())


# Every top-1 mode and P_K with one distribution, and every distribution with one mode and P_K.
GRID = [("logistic_phi", mode, p_k) for mode in MODES for p_k in P_KS] + [
    (d, mode, P_KS[i % 4]) for i, d in enumerate(sorted(DISTRIBUTIONS)) for mode in [MODES[i % 3]]
]


@pytest.mark.parametrize("method", NETWORKS)
@pytest.mark.parametrize("classes, m, batch", [(20, None, 64), (1000, 16, 1), (1000, 16, 64)])
def test_networks_match_original(method, classes, m, batch):
    grid = GRID[::3] if method == "odd_even" else GRID  # the original's dense odd-even takes ~1 s a call
    for seed, (distribution, mode, p_k) in enumerate(grid):
        assert_matches_original(method, classes, m, batch, distribution, mode, p_k, seed)


@pytest.mark.parametrize("classes, m", [(20, None), (1000, 16)])
def test_softsort_matches_original(classes, m):
    for seed, (mode, p_k) in enumerate((mode, p_k) for mode in MODES for p_k in P_KS):
        assert_matches_original("softsort", classes, m, 64, None, mode, p_k, seed)


@pytest.mark.parametrize("classes, m", [(20, None), (1000, 16)])
def test_neuralsort_matches_original_in_float32(classes, m):
    # The original's NeuralSort builds float32 constants, so it runs in float32 only.
    for seed, (mode, p_k) in enumerate((mode, p_k) for mode in MODES for p_k in P_KS):
        assert_matches_original("neuralsort", classes, m, 64, None, mode, p_k, seed, torch.float32, 1e-4)


def reference_loss(logits, target, p_k, method, beta, mode, distribution="cauchy"):
    """The loss written out from the full rank-probability matrix."""
    k = len(p_k)
    p = rank_probabilities(logits, k, method, beta, distribution)
    p_y = p[torch.arange(len(target)), target]  # [N, K]
    top = torch.stack([p_y[:, :r + 1].sum(1) for r in range(k)], dim=1)  # P(rank of y < k)
    softmax_y = logits.softmax(1)[torch.arange(len(target)), target]
    weights = torch.tensor(p_k, dtype=logits.dtype)
    if mode == "sort":
        return -torch.log((top @ weights) * (1 - 2e-7) + 1e-7).mean()
    rest = top[:, 1:] @ weights[1:]
    if mode == "sm":
        return -torch.log((p_k[0] * softmax_y + rest) * (1 - 2e-7) + 1e-7).mean()
    return (p_k[0] * -softmax_y.log() + (1 - p_k[0]) * -torch.log(rest * (1 - 2e-7) + 1e-7)).mean()


@pytest.mark.parametrize("method", ["sinkhorn", "bitonic", "neuralsort"])
@pytest.mark.parametrize("mode", MODES)
def test_matches_loss_written_from_full_matrix(method, mode):
    logits = torch.randn(16, 9, dtype=torch.float64)
    target = torch.randint(0, 9, (16,))
    for p_k in P_KS:
        expected = reference_loss(logits, target, p_k, method, 0.8, mode)
        ours = topk_cross_entropy(logits, target, p_k, method, 0.8, distribution="cauchy", art_lambda=0.25,
                                  top1_mode=mode)
        torch.testing.assert_close(ours, expected)


def test_top1_only_is_cross_entropy():
    logits = torch.randn(32, 10, dtype=torch.float64)
    target = torch.randint(0, 10, (32,))
    ce = F.cross_entropy(logits, target)
    torch.testing.assert_close(topk_cross_entropy(logits, target, [1.0], "bitonic"), ce, rtol=1e-5, atol=0)
    torch.testing.assert_close(topk_cross_entropy(logits, target, [1, 0, 0], "softmax"), ce)


def test_preselection_equals_ranking_the_kept_classes():
    logits = torch.randn(8, 50, dtype=torch.float64)
    target = torch.randint(0, 50, (8,))
    others = logits.scatter(1, target[:, None], float("-inf")).topk(9, dim=1)
    kept = torch.cat([logits.gather(1, target[:, None]), others.values], dim=1)
    expected = topk_cross_entropy(kept, torch.zeros_like(target), P_KS[0], "splitter_selection")
    ours = topk_cross_entropy(logits, target, P_KS[0], "splitter_selection", m=10)
    torch.testing.assert_close(ours, expected)
    x = logits.clone().requires_grad_()
    topk_cross_entropy(x, target, P_KS[0], "splitter_selection", m=10).backward()
    touched = torch.zeros_like(logits, dtype=torch.bool).scatter(1, others.indices, True)
    touched.scatter_(1, target[:, None], True)
    assert (x.grad[~touched] == 0).all() and (x.grad[touched] != 0).any()
    full = topk_cross_entropy(logits, target, P_KS[0], "bitonic")
    torch.testing.assert_close(topk_cross_entropy(logits, target, P_KS[0], "bitonic", m=50), full)


def test_reduction_weight_and_ignore_index_follow_cross_entropy():
    logits = torch.randn(12, 6, dtype=torch.float64)
    target = torch.randint(0, 6, (12,))
    target[[2, 7]] = -100
    weight = torch.rand(6, dtype=torch.float64) + 0.5
    per_sample = topk_cross_entropy(logits, target, [1.0], "odd_even", weight=weight, reduction="none")
    ce = F.cross_entropy(logits, target, weight=weight, reduction="none")
    torch.testing.assert_close(per_sample, ce, rtol=1e-5, atol=1e-7)
    for reduction in ("mean", "sum"):
        ours = topk_cross_entropy(logits, target, [1.0], "odd_even", weight=weight, reduction=reduction)
        torch.testing.assert_close(ours, F.cross_entropy(logits, target, weight=weight, reduction=reduction),
                                   rtol=1e-5, atol=0)
    module = TopKCrossEntropyLoss(P_KS[1], "bitonic", weight=weight, ignore_index=3)
    assert module.weight is weight and "bitonic" in repr(module)
    assert torch.isfinite(module(logits, target.clamp(min=0)))


def test_spatial_and_unbatched_inputs():
    logits = torch.randn(4, 7, 3, 2, dtype=torch.float64)
    target = torch.randint(0, 7, (4, 3, 2))
    per_pixel = topk_cross_entropy(logits, target, P_KS[1], "bitonic", reduction="none")
    flat = topk_cross_entropy(logits.movedim(1, -1).reshape(-1, 7), target.reshape(-1), P_KS[1], "bitonic",
                              reduction="none")
    assert per_pixel.shape == (4, 3, 2)
    torch.testing.assert_close(per_pixel.reshape(-1), flat)
    single = topk_cross_entropy(logits[0, :, 0, 0], target[0, 0, 0], P_KS[1], "bitonic")
    torch.testing.assert_close(single, flat[0])


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    mode=st.sampled_from(MODES),
    batch=st.integers(1, 4),
    classes=st.integers(7, 20),
    kind=st.sampled_from(["random", "ties", "equal", "huge"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    use_m=st.booleans(),
    k_is_c=st.booleans(),
)
def test_property_finite_loss_and_gradient(method, mode, batch, classes, kind, dtype, use_m, k_is_c):
    logits = {"random": torch.randn(batch, classes), "ties": torch.randn(batch, classes).round(),
              "equal": torch.ones(batch, classes), "huge": torch.randn(batch, classes) * 1e4}[kind]
    logits = logits.to(dtype).requires_grad_()
    target = torch.randint(0, classes, (batch,))
    p_k = [1 / classes] * classes if k_is_c else P_KS[0]
    m = classes - 1 if use_m and not k_is_c else None
    loss = topk_cross_entropy(logits, target, p_k, method, m=m, top1_mode=mode)
    loss.backward()
    assert torch.isfinite(loss) and loss >= 0
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("method", ["bitonic", "neuralsort", "sinkhorn"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast(method, dtype):
    layer = torch.nn.Linear(8, 10)
    x, target = torch.randn(6, 8) * 100, torch.randint(0, 10, (6,))
    with torch.autocast("cpu", dtype=dtype):
        logits = layer(x)
        loss = topk_cross_entropy(logits, target, P_KS[1], method, m=6)
    assert logits.dtype == dtype and loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(layer.weight.grad).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        (dict(p_k=[0.5, 0.4]), ValueError, "p_k"),
        (dict(p_k=[1.2, -0.2]), ValueError, "p_k"),
        (dict(p_k=[]), ValueError, "p_k"),
        (dict(p_k="abc"), TypeError, "p_k"),
        (dict(p_k=[0.1] * 10 + [0.0]), ValueError, "K"),
        (dict(m=5), ValueError, "m"),
        (dict(m=2.5), TypeError, "m"),
        (dict(method="softmax"), ValueError, "softmax"),
        (dict(method="heapsort"), ValueError, "method"),
        (dict(top1_mode="ce"), ValueError, "top1_mode"),
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(inverse_temperature=0), ValueError, "inverse_temperature"),
        (dict(distribution="laplace"), ValueError, "distribution"),
        (dict(target=torch.tensor([0, 10, 1, 2])), ValueError, "target"),
        (dict(target=torch.tensor([0, -3, 1, 2])), ValueError, "target"),
        (dict(target=torch.zeros(4)), ValueError, "target"),
        (dict(target=torch.zeros(3, dtype=torch.long)), ValueError, "target"),
        (dict(weight=torch.ones(7)), ValueError, "weight"),
        (dict(weight=torch.ones(10, dtype=torch.long)), TypeError, "weight"),
        (dict(input=torch.zeros(4, 10, dtype=torch.long)), TypeError, "input"),
    ],
)
def test_bad_input(kwargs, error, name):
    args = dict(input=torch.randn(4, 10), target=torch.tensor([0, 1, 2, 3]), p_k=P_KS[1], method="bitonic")
    args.update(kwargs)
    with pytest.raises(error, match=name):
        topk_cross_entropy(**args)


def test_module_validates_at_construction():
    with pytest.raises(ValueError, match="p_k"):
        TopKCrossEntropyLoss([0.3, 0.3])
    with pytest.raises(ValueError, match="reduction"):
        TopKCrossEntropyLoss([1.0], reduction="max")


@pytest.mark.parametrize("method", ["splitter_selection", "neuralsort"])
def test_preselection_takes_tied_classes_by_ascending_index(method):
    # Classes 1..9 tie: besides the target 0, classes 1, 2, 3 are kept in that order (torch.topk
    # promises no order among ties), so the loss is that of those four columns and their gradient.
    logits = torch.zeros(3, 10, dtype=torch.float64)
    logits[:, 0] = -1.0
    logits[2, 5] = 0.5  # a larger class goes first, the tied ones follow
    kept = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3], [0, 5, 1, 2]])
    target = torch.zeros(3, dtype=torch.long)
    loss, grad = loss_and_grad(lambda x, y: topk_cross_entropy(x, y, [0.5, 0.5], method=method, m=4), logits,
                               target)
    expected, expected_grad = loss_and_grad(
        lambda x, y: topk_cross_entropy(x, y, [0.5, 0.5], method=method, m=None), logits.gather(1, kept),
        target)
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    torch.testing.assert_close(grad.gather(1, kept), expected_grad, rtol=1e-12, atol=1e-15)
    assert (grad.abs().sum() - expected_grad.abs().sum()).abs() < 1e-14  # nothing reaches the others
