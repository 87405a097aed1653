"""What a training loop keeps of TopKCrossEntropyLoss: it pickles (pickle, deepcopy, torch.save, worker
processes), takes hyper-parameters set after construction (annealing schedules), shows them all in
its repr, and has defaults that are the paper's settings."""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
import torch.multiprocessing as mp

import softtopk
from softtopk import METHODS, TopKCrossEntropyLoss, topk_cross_entropy
from softtopk.losses import SLOW_CLASSES
from softtopk.metrics import topk_accuracy

P_K = [0.5, 0, 0, 0.5]


def batch(classes: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, classes, generator=g, dtype=torch.float64)
    return x, torch.randint(0, classes, (6,), generator=g)


def losses() -> list[TopKCrossEntropyLoss]:
    """Every method, with preselection, and the defaults."""
    return [TopKCrossEntropyLoss([1.0], "softmax"), TopKCrossEntropyLoss(P_K),
            *(TopKCrossEntropyLoss(P_K, method, m=8, label_smoothing=0.1) for method in METHODS)]


def save_and_load(model: torch.nn.Module) -> torch.nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("loss_fn", losses(), ids=lambda fn: fn.method)
def test_round_trips_give_the_same_loss(loss_fn):
    x, y = batch()
    expected = loss_fn(x, y)
    model = torch.nn.Sequential(torch.nn.Identity(), loss_fn)  # the loss as a submodule
    copies = [pickle.loads(pickle.dumps(loss_fn)), copy.deepcopy(loss_fn), save_and_load(loss_fn),
              save_and_load(model)[1]]
    for restored in copies:
        assert repr(restored) == repr(loss_fn)
        torch.testing.assert_close(restored(x, y), expected, atol=0, rtol=0)


def _worker(rank: int, loss_fn: TopKCrossEntropyLoss, x: torch.Tensor, y: torch.Tensor, out: str) -> None:
    torch.save(loss_fn(x, y), out)


def test_a_spawned_worker_computes_the_same_loss(tmp_path):
    loss_fn = TopKCrossEntropyLoss(P_K, "bitonic", m=8)
    x, y = batch()
    out = str(tmp_path / "loss.pt")
    mp.spawn(_worker, args=(loss_fn, x, y, out), nprocs=1, start_method="spawn")
    torch.testing.assert_close(torch.load(out), loss_fn(x, y), atol=0, rtol=0)


SCHEDULE = [(0.0, 1.0), (0.1, 2.0), (0.05, 4.0), (0.0, 0.5)]  # (label_smoothing, inverse_temperature)


@pytest.mark.parametrize("method", ["bitonic", "softsort", "sinkhorn"])
def test_a_schedule_changes_the_loss_as_a_fresh_loss(method):
    x, y = batch()
    loss_fn = TopKCrossEntropyLoss(P_K, method, m=8)
    for smoothing, beta in SCHEDULE:
        loss_fn.label_smoothing, loss_fn.inverse_temperature = smoothing, beta
        fresh = TopKCrossEntropyLoss(P_K, method, m=8, label_smoothing=smoothing, inverse_temperature=beta)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        value, expected = loss_fn(x1, y), fresh(x2, y)
        torch.testing.assert_close(value, expected, atol=0, rtol=0)
        value.backward()
        expected.backward()
        torch.testing.assert_close(x1.grad, x2.grad, atol=0, rtol=0)
        assert f"label_smoothing={smoothing}" in repr(loss_fn)
        assert f"inverse_temperature={beta}" in repr(loss_fn)
    values = {float(TopKCrossEntropyLoss(P_K, method, m=8, inverse_temperature=b)(x, y)) for _, b in SCHEDULE}
    assert len(values) == len(SCHEDULE)  # the schedule does change the loss


def test_a_schedule_recompiles_under_torch_compile():
    x, y = batch()
    loss_fn = TopKCrossEntropyLoss(P_K, "splitter_selection", m=8)
    compiled = torch.compile(loss_fn, fullgraph=True, backend="eager")
    try:
        for smoothing, beta in SCHEDULE:
            loss_fn.label_smoothing, loss_fn.inverse_temperature = smoothing, beta
            fresh = TopKCrossEntropyLoss(P_K, "splitter_selection", m=8, label_smoothing=smoothing,
                                         inverse_temperature=beta)
            torch.testing.assert_close(compiled(x, y), fresh(x, y))
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize(("name", "value", "error", "message"), [
    ("label_smoothing", 1.5, ValueError, r"label_smoothing must lie in \[0, 1\]"),
    ("inverse_temperature", 0.0, ValueError, "inverse_temperature must be finite and > 0"),
    ("method", "quicksort", ValueError, "method must be one of"),
    ("art_lambda", "half", TypeError, "art_lambda must be a real number"),
    ("m", 3, ValueError, "m must be greater than K"),
    ("m", 2.5, TypeError, "m .* must be an int"),
    ("p_k", [0.5, 0.6], ValueError, "p_k must sum to 1"),
    ("eps", True, TypeError, "eps must be a real number"),
])
def test_a_bad_assignment_fails_at_the_next_call_as_in_the_constructor(name, value, error, message):
    x, y = batch()
    loss_fn = TopKCrossEntropyLoss(P_K, "bitonic")
    setattr(loss_fn, name, value)
    with pytest.raises(error, match=message):
        loss_fn(x, y)
    with pytest.raises(error, match=message):
        TopKCrossEntropyLoss(**{"p_k": P_K, "method": "bitonic", name: value})


def test_the_repr_shows_every_hyper_parameter():
    loss_fn = TopKCrossEntropyLoss(P_K, "bitonic", 2.0, m=8, distribution="cauchy", art_lambda=0.3,
                                   top1_mode="smce", ignore_index=-1, reduction="sum", label_smoothing=0.2,
                                   eps=0.0)
    assert repr(loss_fn) == (
        "TopKCrossEntropyLoss(p_k=[0.5, 0.0, 0.0, 0.5], method='bitonic', inverse_temperature=2.0, m=8, "
        "distribution='cauchy', art_lambda=0.3, top1_mode='smce', ignore_index=-1, reduction='sum', "
        "label_smoothing=0.2, eps=0.0)")
    loss_fn.art_lambda = 0.4
    assert "art_lambda=0.4" in repr(loss_fn)


def test_art_lambda_takes_effect():
    x, y = batch()
    values = {float(TopKCrossEntropyLoss(P_K, "bitonic", art_lambda=a)(x, y)) for a in (0.1, 0.5)}
    assert len(values) == 2


def test_the_defaults_are_the_papers():
    loss_fn = TopKCrossEntropyLoss(P_K)
    assert (loss_fn.method, loss_fn.inverse_temperature, loss_fn.m) == ("splitter_selection", 1.0, "auto")
    assert (loss_fn.distribution, loss_fn.art_lambda, loss_fn.top1_mode) == ("logistic_phi", 0.5, "sm")


@pytest.mark.parametrize(("classes", "m"), [(40, None), (100, None), (101, 16), (1000, 16)])
def test_auto_m_ranks_every_class_up_to_100_and_16_above(classes, m):
    x, y = batch(classes)
    expected = TopKCrossEntropyLoss(P_K, m=m)(x, y)
    torch.testing.assert_close(TopKCrossEntropyLoss(P_K)(x, y), expected, atol=0, rtol=0)
    torch.testing.assert_close(topk_cross_entropy(x, y, P_K), expected, atol=0, rtol=0)


def test_ranking_many_classes_without_preselection_warns_once_per_instance():
    x, y = batch(SLOW_CLASSES)
    loss_fn = TopKCrossEntropyLoss(P_K, "softsort", m=None)
    with pytest.warns(UserWarning, match="ranks all 1000 classes.*m=16"):
        loss_fn(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss_fn(x, y)  # once per instance
        TopKCrossEntropyLoss(P_K)(x, y)  # the defaults preselect
        TopKCrossEntropyLoss(P_K, "softsort", m=None)(x[:, :SLOW_CLASSES - 1], y % 999)
    with pytest.warns(UserWarning, match="ranks all 1000 classes"):
        topk_cross_entropy(x, y, P_K, "softsort", m=None)


def test_the_loss_is_in_the_package_namespace():
    assert softtopk.TopKCrossEntropyLoss is TopKCrossEntropyLoss


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: softtopk.sorting_network("bitonic", True), TypeError, "n must be an int, got bool"),
    (lambda: softtopk.sorting_network("bitonic", 0), ValueError, "n must be an int >= 1, got 0"),
    (lambda: softtopk.rank_probabilities(torch.randn(2, 5), 2, "bitonic", art_lambda="x"), TypeError,
     "art_lambda must be a real number"),
    (lambda: softtopk.rank_probabilities(torch.randn(2, 5), 2, "bitonic", art_lambda=1.0), ValueError,
     r"art_lambda must lie in \[0, 1\)"),
    (lambda: topk_accuracy(torch.randn(2, 5), torch.tensor([0, 1]), ks=(1, 2.0)), TypeError,
     "each k of ks must be an int"),
    (lambda: TopKCrossEntropyLoss(P_K, ignore_index=True), TypeError, "ignore_index must be an int"),
    (lambda: TopKCrossEntropyLoss(P_K, m=True), TypeError, "m .* must be an int"),
    (lambda: TopKCrossEntropyLoss(P_K, eps=float("nan")), ValueError, r"eps must lie in \[0, 0.5\)"),
])
def test_the_shared_checks_name_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_a_bad_assignment_under_compile_never_keeps_the_old_value():
    x, y = batch()
    loss_fn = TopKCrossEntropyLoss(P_K, "bitonic", m=8)
    compiled = torch.compile(loss_fn, fullgraph=True, backend="eager")
    try:
        compiled(x, y)
        loss_fn.label_smoothing = 2.0
        with pytest.raises(Exception, match="label_smoothing must lie in"):
            compiled(x, y)
    finally:
        torch._dynamo.reset()
