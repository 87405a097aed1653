"""linear_topk_cross_entropy: the loss of F.linear's logits, computed in row chunks, equals the unfused loss
(value and the gradients of input, weight and bias) over a sampled grid of the loss's options."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
import torch.nn.functional as F

import softtopk
from softtopk import LinearTopKCrossEntropyLoss, linear_topk_cross_entropy, topk_cross_entropy
from softtopk.linear_loss import default_chunk

N, H, C, CHUNK = 23, 6, 1009, 7  # neither N nor C a multiple of the chunk
P_KS = ([0.2] * 5, [0.5, 0, 0, 0, 0.5], [0, 0, 0, 0, 1], [0.25, 0, 0, 0, 0.75])
SLOW_WITHOUT_M = ("bitonic", "splitter_selection", "odd_even", "sinkhorn", "ot_topk")  # on 1009 classes
TOPK = dict(method="splitter_selection", inverse_temperature=1.0, m=16, distribution="logistic_phi")


def head(dtype=torch.float64, seed=0, batch=(N,)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, H, generator=g, dtype=dtype)
    w = torch.randn(C, H, generator=g, dtype=dtype) / H**0.5
    b = torch.randn(C, generator=g, dtype=dtype)
    return x, w, b


def make_target(kind, batch=(N,), seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "index":
        y = torch.randint(0, C, batch, generator=g)
        y.view(-1)[::5] = -100
        return y
    rows = int(torch.Size(batch).numel())
    classes = torch.randint(0, C, (rows, 3), generator=g)
    if kind == "probability":
        mass = torch.rand(rows, 3, generator=g, dtype=torch.float64)
        q = torch.zeros(rows, C, dtype=torch.float64).scatter_add_(1, classes, mass)
        return (q / q.sum(1, keepdim=True)).reshape(*batch, C)
    sets = torch.zeros(rows, C, dtype=torch.bool).scatter_(1, classes, True)
    sets[::4] = False  # rows without a true class are skipped
    return sets.reshape(*batch, C)


def unfused_and_fused(x, w, b, target, p_k, grad_scale=None, **kwargs):
    """(loss, grads) of the unfused and of the fused loss, for the output gradient `grad_scale`
    (default: ones), with the gradients of those of x, w, b that require them."""
    class_weight = kwargs.pop("class_weight", None)
    chunk_size = kwargs.pop("chunk_size", CHUNK)
    results = []
    for fused in (False, True):
        leaves = [None if t is None else t.detach().clone().requires_grad_(t.requires_grad)
                  for t in (x, w, b)]
        if fused:
            loss = linear_topk_cross_entropy(leaves[0], leaves[1], target, p_k, leaves[2],
                                             chunk_size=chunk_size, class_weight=class_weight, **kwargs)
        else:
            logits = F.linear(leaves[0], leaves[1], leaves[2]).reshape(-1, w.shape[0])
            dense = target.dtype.is_floating_point or target.dtype == torch.bool
            flat = target.reshape(logits.shape) if dense else target.reshape(-1)
            loss = topk_cross_entropy(logits, flat, p_k, weight=class_weight, **kwargs)
            loss = loss.reshape(x.shape[:-1]) if kwargs.get("reduction") == "none" else loss
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        grads = torch.autograd.grad(loss, wanted, torch.ones_like(loss) if grad_scale is None else grad_scale)
        results.append((loss.detach(), grads))
    return results


def assert_same(results, tol=1e-9):
    (loss, grads), (fused_loss, fused_grads) = results
    torch.testing.assert_close(fused_loss, loss, rtol=tol, atol=tol, equal_nan=True)
    for grad, fused_grad in zip(grads, fused_grads, strict=True):
        assert torch.isfinite(fused_grad).all()
        scale = grad.abs().max().item() if grad.numel() else 1.0
        torch.testing.assert_close(fused_grad, grad, rtol=tol, atol=tol * max(scale, 1.0))


def _grid():
    """A sample of methods x P_K x top-1 modes x m x options x reductions x targets, every method,
    target kind and reduction included."""
    methods = ("softmax", *softtopk.METHODS)
    options = ({}, {"class_weight": True}, {"label_smoothing": 0.2}, {"eps": 0.0},
               {"class_weight": True, "label_smoothing": 0.1})
    full = list(itertools.product(methods, range(len(P_KS)), ("sm", "smce", "sort"), (None, 16),
                                  range(len(options)), ("mean", "sum", "none"),
                                  ("index", "probability", "multilabel")))
    sample = random.Random(0).sample(full, 30)
    for i, method in enumerate(methods):  # every method once more with m, the usual vocabulary-scale case
        sample.append((method, i % 4, "sm", 16, i % len(options), ("mean", "sum", "none")[i % 3],
                       ("index", "probability", "multilabel")[i // 3 % 3]))
    cases = []
    for method, p, mode, m, o, reduction, kind in sample:
        m = 16 if method in SLOW_WITHOUT_M else m
        p_k = [1.0] if method == "softmax" else P_KS[p]
        cases.append(pytest.param(method, p_k, mode, m, options[o], reduction, kind,
                                  id=f"{method}-{p}-{mode}-{m}-{o}-{reduction}-{kind}"))
    return cases


@pytest.mark.parametrize("method, p_k, mode, m, option, reduction, kind", _grid())
def test_equals_unfused_loss(method, p_k, mode, m, option, reduction, kind):
    x, w, b = (t.requires_grad_() for t in head())
    kwargs = dict(option)
    if kwargs.pop("class_weight", False):
        g = torch.Generator().manual_seed(1)
        kwargs["class_weight"] = torch.rand(C, generator=g, dtype=torch.float64)
    results = unfused_and_fused(x, w, b, make_target(kind), p_k, method=method, inverse_temperature=0.7, m=m,
                                distribution="logistic_phi", top1_mode=mode, reduction=reduction, **kwargs)
    assert_same(results)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_grad_output_scales(reduction):
    """The loss times 3 plus another term of the same leaves: every gradient as unfused."""
    x, w, b = (t.requires_grad_() for t in head())
    y = make_target("index")
    fused = linear_topk_cross_entropy(x, w, y, [0.5, 0, 0, 0, 0.5], b, chunk_size=CHUNK, reduction=reduction,
                                      **TOPK)
    unfused = topk_cross_entropy(F.linear(x, w, b), y, [0.5, 0, 0, 0, 0.5], reduction=reduction, **TOPK)
    scale = torch.linspace(-2, 3, N, dtype=torch.float64) if reduction == "none" else 3.0
    grads = [torch.autograd.grad((scale * loss).sum() + (x**3).sum() + w.sin().sum() + b.sum(), (x, w, b))
             for loss in (unfused, fused)]
    for expected, got in zip(*grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True)])
def test_one_gradient_at_a_time(needs):
    x, w, b = head()
    leaves = [t.requires_grad_(need) for t, need in zip((x, w, b), needs, strict=True)]
    assert_same(unfused_and_fused(*leaves, make_target("index"), [0.5, 0, 0, 0, 0.5], **TOPK))


@pytest.mark.parametrize("kind", ["index", "multilabel"])
def test_no_bias_and_batch_shape(kind):
    """Input [2, 3, 4, H] flattened like its target; 'none' returns the batch shape."""
    batch = (2, 3, 4)
    x, w, _ = (t.requires_grad_() for t in head(batch=batch))
    target = make_target(kind, batch)
    results = unfused_and_fused(x, w, None, target, [0.5, 0, 0, 0, 0.5], reduction="none", **TOPK)
    assert results[1][0].shape == batch
    assert_same(results)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch_and_single_prediction(reduction):
    """N = 0 (NaN under 'mean', 0 under 'sum', as unfused) and an input [H] with a target []."""
    for batch, y in (((0,), torch.zeros(0, dtype=torch.long)), ((), torch.tensor(5))):
        x, w, b = (t.requires_grad_() for t in head(batch=batch))
        assert_same(unfused_and_fused(x, w, b, y, [0.5, 0, 0, 0, 0.5], reduction=reduction, **TOPK))


@pytest.mark.parametrize("method", ["softmax", "splitter_selection"])
def test_all_ignored_batch(method):
    """'mean' of nothing is NaN, as in cross-entropy, with zero gradients; 'sum' is 0."""
    x, w, b = (t.requires_grad_() for t in head())
    y = torch.full((N,), -100)
    p_k = [1.0] if method == "softmax" else [0.5, 0, 0, 0, 0.5]
    for reduction in ("mean", "sum"):
        results = unfused_and_fused(x, w, b, y, p_k, reduction=reduction, label_smoothing=0.1,
                                    **{**TOPK, "method": method})
        assert_same(results)
        loss, grads = results[1]
        assert loss.isnan() if reduction == "mean" else loss == 0
        assert all((g == 0).all() for g in grads)


@pytest.mark.parametrize("m", [None, 16])
def test_masked_classes(m):
    """-inf bias entries mask classes: finite loss and gradients, zero bias gradient there."""
    x, w, b = head()
    b[::3] = -torch.inf
    y = make_target("index") // 3 * 3 + 1  # targets not masked (ignore_index maps to 1 + a multiple of 3)
    y[::5] = -100
    x, w, b = (t.requires_grad_() for t in (x, w, b))
    results = unfused_and_fused(x, w, b, y, [0.5, 0, 0, 0, 0.5], **{**TOPK, "m": m})
    assert_same(results)
    loss, (_, _, grad_b) = results[1]
    assert torch.isfinite(loss) and (grad_b[::3] == 0).all()


@pytest.mark.parametrize("method", ["softmax", "splitter_selection"])
def test_bf16_autocast_no_worse_than_unfused(method):
    """Under bf16 autocast, loss and gradients are no further from the float32 result than the
    unfused loss under the same autocast."""
    x, w, b = (t.float().requires_grad_() for t in head(seed=3))
    y = make_target("index", seed=3)
    p_k = [1.0] if method == "softmax" else [0.5, 0, 0, 0, 0.5]
    kwargs = {**TOPK, "method": method}
    (reference, reference_grads), _ = unfused_and_fused(x, w, b, y, p_k, **kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (loss, grads), (fused_loss, fused_grads) = unfused_and_fused(x, w, b, y, p_k, **kwargs)
    assert fused_loss.dtype == torch.float32
    assert (fused_loss - reference).abs() <= 1.5 * (loss - reference).abs() + 1e-6
    for expected, unfused, fused in zip(reference_grads, grads, fused_grads, strict=True):
        assert fused.dtype == torch.float32
        assert (fused - expected).norm() <= 1.5 * (unfused - expected).norm() + 1e-6


@pytest.mark.parametrize(("rows", "classes", "chunk"), [
    (2048, 131072, 64), (2048, 32768, 256), (500, 20000, 125), (23, 1009, 6), (3, 2**30, 1), (1, 10, 1)])
def test_default_chunk_holds_at_most_2_to_the_23_logits_and_a_quarter_of_the_rows(rows, classes, chunk):
    assert default_chunk(rows, classes) == chunk


def test_default_chunk_and_module():
    x, w, b = (t.requires_grad_() for t in head())
    y = make_target("index")
    class_weight = torch.rand(C, dtype=torch.float64)
    module = LinearTopKCrossEntropyLoss([0.5, 0, 0, 0, 0.5], class_weight=class_weight, **TOPK)
    assert "chunk_size=None" in repr(module) and module.class_weight is class_weight
    loss = module(x, w, y, b)
    expected = topk_cross_entropy(F.linear(x, w, b), y, [0.5, 0, 0, 0, 0.5], weight=class_weight, **TOPK)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


def test_gradients_back_propagate_once():
    x, w, _ = (t.requires_grad_() for t in head())
    loss = linear_topk_cross_entropy(x, w, make_target("index"), [0.5, 0, 0, 0, 0.5], **TOPK)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once"):
        loss.backward()


def test_runs_eagerly_under_compile():
    x, w, b = (t.float().requires_grad_() for t in head())
    y = make_target("index")

    def step(x, w, b):
        return 2 * linear_topk_cross_entropy(x.tanh(), w, y, [0.5, 0, 0, 0, 0.5], b, chunk_size=CHUNK, **TOPK)

    torch._dynamo.reset()
    expected = torch.autograd.grad(step(x, w, b), (x, w, b))
    got = torch.autograd.grad(torch.compile(step, backend="eager")(x, w, b), (x, w, b))
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("change, error, name", [
    (dict(w=torch.zeros(C, H + 1)), ValueError, "agree on H"),
    (dict(w=torch.zeros(C * H)), ValueError, "weight must be 2-D"),
    (dict(w=torch.zeros(C, H, dtype=torch.long)), TypeError, "weight"),
    (dict(b=torch.zeros(C - 1)), ValueError, "bias must have shape"),
    (dict(b=[0.0] * C), TypeError, "bias"),
    (dict(x=torch.zeros(N, H, dtype=torch.long)), TypeError, "input"),
    (dict(y=torch.zeros(N + 1, dtype=torch.long)), ValueError, "target"),
    (dict(chunk_size=0), ValueError, "chunk_size"),
    (dict(chunk_size=2.0), TypeError, "chunk_size"),
    (dict(chunk_size=True), TypeError, "chunk_size"),
    (dict(class_weight=torch.ones(C + 1)), ValueError, "weight"),
    (dict(reduction="avg"), ValueError, "reduction"),
])
def test_bad_input(change, error, name):
    x, w, b = head(torch.float32)
    args = dict(x=x, w=w, b=b, y=make_target("index"))
    kwargs = {k: change.pop(k) for k in list(change) if k not in args}
    args.update(change)
    with pytest.raises(error, match=name):
        linear_topk_cross_entropy(args["x"], args["w"], args["y"], [0.5, 0.5], args["b"], **kwargs, **TOPK)


def test_module_rejects_weight_keyword_and_bad_options():
    with pytest.raises(TypeError, match="class_weight"):
        LinearTopKCrossEntropyLoss([0.5, 0.5], weight=torch.ones(C))
    with pytest.raises(ValueError, match="chunk_size"):
        LinearTopKCrossEntropyLoss([0.5, 0.5], chunk_size=-1)
    with pytest.raises(ValueError, match="method"):
        LinearTopKCrossEntropyLoss([0.5, 0.5], method="quicksort")


def test_no_gradients_taken_where_none_is_wanted(monkeypatch):
    """Under no_grad, or with no tensor requiring a gradient, the chunks' losses are only evaluated."""
    x, w, b = (t.requires_grad_() for t in head())
    y = make_target("index")
    expected = topk_cross_entropy(F.linear(x, w, b), y, [0.5, 0, 0, 0, 0.5], **TOPK).detach()

    def no_gradients(*args):
        raise AssertionError("gradients taken")

    monkeypatch.setattr(softtopk.linear_loss, "_chunk_pass", no_gradients)
    with torch.no_grad():
        loss = linear_topk_cross_entropy(x, w, y, [0.5, 0, 0, 0, 0.5], b, chunk_size=CHUNK, **TOPK)
    detached = linear_topk_cross_entropy(x.detach(), w.detach(), y, [0.5, 0, 0, 0, 0.5], b.detach(), **TOPK)
    for value in (loss, detached):
        assert not value.requires_grad
        torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
