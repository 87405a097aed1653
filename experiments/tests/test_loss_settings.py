"""The loss of a run's settings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import softtopk
from softtopk_experiments.settings import losses
from softtopk_experiments.settings.losses import (
    METHODS,
    check_targets,
    display_name,
    format_p_k,
    make_loss,
    optimised_k,
    selection_weights,
)

SOFTMAX = {"method": "softmax", "p_k": (1.0, 0, 0, 0, 0), "label_smoothing": 0.0}


def test_the_methods_are_the_librarys_and_two_more():
    assert METHODS == ("softmax", *softtopk.METHODS, "smooth_topk")
    assert display_name("bitonic") == "Bitonic DSN" and display_name("a_new_one") == "a_new_one"
    assert [display_name(m) for m in ("lapsum", "ot_topk", "softmax")] == ["LapSum", "OT top-k", "Softmax"]


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_is_cross_entropy_with_label_smoothing_and_probability_targets(smoothing):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 7, (6,), generator=g)
    probabilities = torch.softmax(torch.randn(6, 7, generator=g, dtype=torch.float64), dim=1)
    loss = make_loss({**SOFTMAX, "label_smoothing": smoothing})
    for target in (labels, probabilities):
        expected = F.cross_entropy(logits, target, label_smoothing=smoothing)
        assert torch.allclose(loss(logits, target), expected, rtol=1e-12, atol=0)
    check_targets(loss, 7, probabilities=True)


def test_label_smoothing_is_passed_to_the_top_k_loss_only_when_used(monkeypatch):
    calls = []
    monkeypatch.setattr(losses.softtopk, "TopKCrossEntropyLoss", lambda *args, **kw: calls.append(kw))
    settings = {"method": "neuralsort", "p_k": (0.5, 0.5), "inverse_temperature": 0.5, "m": 16,
                "top1_mode": "sm", "label_smoothing": 0.0}
    make_loss(settings)
    make_loss({**settings, "label_smoothing": 0.2})
    make_loss({**settings, "method": "bitonic", "distribution": "cauchy", "art_lambda": 0.25})
    assert "label_smoothing" not in calls[0] and calls[1]["label_smoothing"] == 0.2
    assert calls[0] == {"method": "neuralsort", "m": 16, "inverse_temperature": 0.5, "top1_mode": "sm"}
    assert (calls[2]["distribution"], calls[2]["art_lambda"]) == ("cauchy", 0.25)


def test_the_top_k_loss_is_the_librarys():
    settings = {"method": "splitter_selection", "p_k": (0.5, 0, 0, 0, 0.5), "inverse_temperature": 1.0,
                "m": 6, "distribution": "logistic_phi", "art_lambda": 0.5, "top1_mode": "sm",
                "label_smoothing": 0.0}
    logits, labels = torch.randn(5, 9, dtype=torch.float64), torch.arange(5)
    expected = softtopk.TopKCrossEntropyLoss([0.5, 0, 0, 0, 0.5], method="splitter_selection", m=6,
                                             distribution="logistic_phi", art_lambda=0.5)(logits, labels)
    assert torch.equal(make_loss(settings)(logits, labels), expected)


def test_smooth_topk_is_the_hard_variant_that_the_paper_runs():
    loss = make_loss({"method": "smooth_topk", "p_k": (0, 0, 1.0), "tau": 1.0, "alpha": 1.0})
    assert isinstance(loss, softtopk.SmoothHardTopKLoss) and loss.k == 3
    with pytest.raises(ValueError, match="the loss does not take probability targets"):
        check_targets(loss, 5, probabilities=True)
    check_targets(loss, 5, probabilities=False)
    with pytest.raises(ValueError, match="must be one-hot"):
        optimised_k((0.5, 0.5))


def test_p_k_labels_and_weights():
    assert format_p_k((0.5, 0, 0, 0, 0.5)) == "[.5, 0, 0, 0, .5]" and format_p_k((1.0,)) == "[1]"
    assert selection_weights((0.25, 0, 0, 0, 0.75)) == {1: 0.25, 5: 0.75}
