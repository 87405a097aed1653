"""The targets of TopKCrossEntropyLoss beyond class indices: label smoothing, class probabilities
(mixup, cutmix) and multi-label sets, against cross-entropy and against loops over one-hot targets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from softtopk import METHODS, TopKCrossEntropyLoss
from softtopk._checks import device_path

P_K = [0.5, 0, 0, 0, 0.5]
REDUCTIONS = ("mean", "sum", "none")


def sparse_probabilities(batch: int, classes: int, nonzero: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.zeros(batch, classes, dtype=torch.float64)
    for row in range(batch):
        count = 1 + (row % nonzero)
        chosen = torch.randperm(classes, generator=g)[:count]
        q[row, chosen] = torch.rand(count, generator=g, dtype=torch.float64) + 0.1
    return q / q.sum(1, keepdim=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_label_smoothing_equals_cross_entropy(reduction):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(9, 7, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, 7, (9,), generator=g)
    target[[2, 5]] = -100
    weight = torch.rand(7, generator=g, dtype=torch.float64) + 0.2
    expected = F.cross_entropy(logits, target, weight=weight, reduction=reduction, label_smoothing=0.15)
    options = dict(weight=weight, reduction=reduction, label_smoothing=0.15)
    for fn in (TopKCrossEntropyLoss([1.0], "softmax", **options),
               TopKCrossEntropyLoss([1.0], "bitonic", eps=0.0, **options)):
        torch.testing.assert_close(fn(logits, target), expected, atol=1e-6, rtol=0)
    q = sparse_probabilities(9, 7, 3)
    expected = F.cross_entropy(logits, q, weight=weight, reduction=reduction, label_smoothing=0.15)
    fn = TopKCrossEntropyLoss([1.0], "splitter_selection", weight=weight, reduction=reduction,
                              label_smoothing=0.15, eps=0.0)
    torch.testing.assert_close(fn(logits, q), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_label_smoothing_mixes_the_top_k_loss_with_the_uniform_cross_entropy(method):
    logits = torch.randn(6, 12, dtype=torch.float64)
    target = torch.randint(0, 12, (6,))
    plain = TopKCrossEntropyLoss(P_K, method, m=8, reduction="none")(logits, target)
    smoothed = TopKCrossEntropyLoss(P_K, method, m=8, reduction="none", label_smoothing=0.3)(logits, target)
    uniform = -logits.log_softmax(1).mean(1)
    torch.testing.assert_close(smoothed, 0.7 * plain + 0.3 * uniform, atol=1e-12, rtol=0)


def loop_over_classes(fn_none, logits, q):
    """sum_c q_c L(s, c) per row from one-hot index targets (`fn_none` applies any class weight)."""
    rows = []
    for x, row in zip(logits, q, strict=True):
        total = x.new_zeros(())
        for c in row.nonzero()[:, 0]:
            total = total + row[c] * fn_none(x[None], c[None])[0]
        rows.append(total)
    return torch.stack(rows)


@pytest.mark.parametrize("method", METHODS)
def test_probability_targets_equal_the_loop_over_their_classes(method):
    logits = torch.randn(7, 15, dtype=torch.float64) * 2
    q = sparse_probabilities(7, 15, 3, seed=1)
    weight = torch.rand(15, dtype=torch.float64) + 0.5
    per_class = TopKCrossEntropyLoss(P_K, method, weight=weight, reduction="none")
    expected = loop_over_classes(per_class, logits, q)
    for reduction, reduce in (("none", lambda r: r), ("sum", torch.sum), ("mean", torch.mean)):
        fn = TopKCrossEntropyLoss(P_K, method, weight=weight, reduction=reduction)
        torch.testing.assert_close(fn(logits, q), reduce(expected), atol=1e-6, rtol=0)
    x = logits.clone().requires_grad_()
    x_loop = logits.clone().requires_grad_()
    TopKCrossEntropyLoss(P_K, method, weight=weight)(x, q).backward()
    loop_over_classes(per_class, x_loop, q).mean().backward()
    torch.testing.assert_close(x.grad, x_loop.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_one_hot_probabilities_equal_class_indices(method):
    logits = torch.randn(8, 30)
    target = torch.randint(0, 30, (8,))
    fn = TopKCrossEntropyLoss(P_K, method, m=10)
    torch.testing.assert_close(fn(logits, F.one_hot(target, 30).float()), fn(logits, target))


@pytest.mark.parametrize("method", METHODS)
def test_preselection_keeps_every_target_class(method):
    """m = 8: the classes with probability > 0 (by decreasing probability) and the highest others."""
    logits = torch.randn(5, 40, dtype=torch.float64)
    q = sparse_probabilities(5, 40, 3, seed=2)
    fn = TopKCrossEntropyLoss(P_K, method, m=8, reduction="none")
    expected = []
    for x, row in zip(logits, q, strict=True):
        targets = row.argsort(descending=True, stable=True)[: int((row > 0).sum())]
        others = x.masked_fill(row > 0, -torch.inf).argsort(descending=True)[: 8 - len(targets)]
        kept = torch.cat([targets, others])
        full = TopKCrossEntropyLoss(P_K, method, reduction="none")
        expected.append(loop_over_classes(full, x[kept][None], row[kept][None])[0])
    torch.testing.assert_close(fn(logits, q), torch.stack(expected), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (torch.tensor([[-0.1, 0.3, 0.8]] * 3).repeat(1, 2) / 2, "non-negative"),
        (torch.full((3, 6), float("inf")), "finite"),
        (torch.full((3, 6), float("nan")), "finite"),
        (torch.full((3, 5), 0.2), "shape"),
    ],
)
def test_bad_probability_targets(target, message):
    with pytest.raises(ValueError, match=message):
        TopKCrossEntropyLoss(P_K, "bitonic")(torch.randn(3, 6), target)


@pytest.mark.parametrize("method", ["softmax", "bitonic", "softsort"])
def test_rows_that_do_not_sum_to_one_are_taken_as_cross_entropy_takes_them(method):
    """The loss is linear in a row: scaled rows scale their losses, and with p_k = [1] (eps = 0) or
    'softmax' it is cross-entropy's value for the same rows."""
    logits = torch.randn(6, 9, dtype=torch.float64)
    sums = torch.tensor([0.5, 1, 2, 3, 0.25, 1.5], dtype=torch.float64)
    q = sparse_probabilities(6, 9, 3, seed=3) * sums[:, None]
    top1 = TopKCrossEntropyLoss([1.0], method, eps=0.0, reduction="none")
    expected = F.cross_entropy(logits, q, reduction="none")
    torch.testing.assert_close(top1(logits, q), expected, atol=1e-12, rtol=0)
    if method != "softmax":
        fn = TopKCrossEntropyLoss(P_K, method, reduction="none")
        torch.testing.assert_close(fn(logits, 2.5 * q), 2.5 * fn(logits, q), atol=1e-12, rtol=0)


def mixup_rows(target: torch.Tensor, classes: int, lam: float, smoothing: float) -> torch.Tensor:
    """timm's `mixup_target`: one-hot rows with `off = smoothing / C`, `on = 1 - smoothing + off`,
    mixed with the batch flipped."""
    off = smoothing / classes
    on = 1 - smoothing + off

    def one_hot(t):
        return torch.full((len(t), classes), off, dtype=torch.float64).scatter_(1, t[:, None], on)

    return one_hot(target) * lam + one_hot(target.flip(0)) * (1 - lam)


@pytest.mark.parametrize("method", ["bitonic", "splitter_selection", "softsort", "lapsum"])
@pytest.mark.parametrize("m", [None, 8])
def test_timm_mixup_rows_are_two_class_rows_with_label_smoothing(method, m):
    """Every entry of a smoothed mixup row is non-zero; its floor is label smoothing, so the loss and
    its gradient equal those of the two-class rows with label_smoothing = the smoothing."""
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(7, 30, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, 30, (7,), generator=g)
    dense, sparse = mixup_rows(target, 30, 0.7, 0.1), mixup_rows(target, 30, 0.7, 0.0)
    assert (dense > 0).all()
    for reduction in ("none", "mean"):
        fn = TopKCrossEntropyLoss(P_K, method, m=m, reduction=reduction)
        smoothed = TopKCrossEntropyLoss(P_K, method, m=m, reduction=reduction, label_smoothing=0.1)
        x, x_sparse = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        value, expected = fn(x, dense), smoothed(x_sparse, sparse)
        torch.testing.assert_close(value, expected, atol=1e-12, rtol=0)
        value.sum().backward()
        expected.sum().backward()
        torch.testing.assert_close(x.grad, x_sparse.grad, atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", ["bitonic", "neuralsort"])
def test_mixup_rows_on_the_device_path(method):
    """The floor is taken without a read back from the device: the device path (float32) gives the
    CPU path's loss and gradient."""
    logits = torch.randn(5, 40) * 2
    dense = mixup_rows(torch.arange(5), 40, 0.6, 0.2).float()
    fn = TopKCrossEntropyLoss(P_K, method, m=6)
    x, x_device = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    expected = fn(x, dense)
    with device_path():
        value = fn(x_device, dense)
    torch.testing.assert_close(value, expected)
    expected.backward()
    value.backward()
    torch.testing.assert_close(x_device.grad, x.grad)


def test_a_row_with_too_many_classes_says_what_to_do():
    q = torch.softmax(torch.randn(3, 30), dim=1)  # every class above the row's floor but one
    fn = TopKCrossEntropyLoss(P_K, "bitonic", m=8)
    with pytest.raises(ValueError, match=r"m = 8 must exceed .* got a row with 29 .* give m > 29, m='auto'"):
        fn(torch.randn(3, 30), q)
    assert torch.isfinite(TopKCrossEntropyLoss(P_K, "bitonic")(torch.randn(3, 30), q))  # 'auto' ranks all 30


def test_spatial_probability_targets():
    logits = torch.randn(2, 8, 3, 4, dtype=torch.float64)
    q = torch.softmax(torch.randn(2, 8, 3, 4, dtype=torch.float64) * 3, dim=1)
    fn = TopKCrossEntropyLoss(P_K, "softsort", reduction="none")
    out = fn(logits, q)
    flat = fn(logits.movedim(1, -1).reshape(-1, 8), q.movedim(1, -1).reshape(-1, 8))
    assert out.shape == (2, 3, 4)
    torch.testing.assert_close(out.reshape(-1), flat)


def multi_label(batch: int, classes: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, classes, generator=g) < 3 / classes
    target[0] = False  # a row without a true class is skipped
    target[1, :3] = True
    return target


@pytest.mark.parametrize("method", ["softmax", *METHODS])
def test_multi_label_is_the_mean_over_the_true_classes(method):
    logits = torch.randn(6, 12, dtype=torch.float64)
    target = multi_label(6, 12)
    weight = torch.rand(12, dtype=torch.float64) + 0.5
    p_k = [1.0, 0, 0, 0, 0] if method == "softmax" else P_K
    per_class = TopKCrossEntropyLoss(p_k, method, weight=weight, reduction="none")
    counts = target.sum(1).clamp_min(1)
    expected = loop_over_classes(per_class, logits, target / counts[:, None])
    mean_weight = (target * weight).sum(1) / counts
    fn = TopKCrossEntropyLoss(p_k, method, weight=weight, reduction="none")
    torch.testing.assert_close(fn(logits, target), expected, atol=1e-6, rtol=0)
    mean = TopKCrossEntropyLoss(p_k, method, weight=weight)(logits, target)
    torch.testing.assert_close(mean, expected.sum() / mean_weight.sum(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_multi_label_with_preselection(method):
    logits = torch.randn(6, 30, dtype=torch.float64)
    target = multi_label(6, 30, seed=1)
    fn = TopKCrossEntropyLoss(P_K, method, m=9, reduction="none")
    full = TopKCrossEntropyLoss(P_K, method, reduction="none")
    expected = []
    for x, row in zip(logits, target, strict=True):
        true = row.nonzero()[:, 0]  # in class order
        others = x.masked_fill(row, -torch.inf).argsort(descending=True)[: 9 - len(true)]
        kept = torch.cat([true, others])
        share = row[kept].double() / max(len(true), 1)
        expected.append(loop_over_classes(full, x[kept][None], share[None])[0])
    torch.testing.assert_close(fn(logits, target), torch.stack(expected), atol=1e-6, rtol=0)
    crowded = torch.zeros(2, 30, dtype=torch.bool)
    crowded[0, :9] = True
    with pytest.raises(ValueError, match="m = 9"):
        fn(logits[:2], crowded)


@settings(max_examples=25, deadline=None)
@given(method=st.sampled_from(METHODS), nonzero=st.integers(1, 3), seed=st.integers(0, 10**6),
       classes=st.integers(5, 12), mode=st.sampled_from(["sm", "smce", "sort"]))
def test_property_probability_targets_equal_the_loop(method, nonzero, seed, classes, mode):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, classes, generator=g, dtype=torch.float64) * 3
    q = sparse_probabilities(3, classes, nonzero, seed)
    fn = TopKCrossEntropyLoss(P_K, method, top1_mode=mode, reduction="none")
    torch.testing.assert_close(fn(logits, q), loop_over_classes(fn, logits, q), atol=1e-6, rtol=0)
