"""Model selection: per-metric (the paper's) and by the P_K-weighted score; still-improving runs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from softtopk_experiments.results.summary import best_row, converged, stopping, summarize


def _row(epoch, val1, val5, test1, test5):
    row = {"epoch": epoch, "step": 10 * epoch, "val_top1": val1, "val_top5": val5, "test_top1": test1,
           "test_top5": test5, "seconds": 1.0}
    return {**row, "score": 0.5 * val1 + 0.5 * val5}


HISTORY = [_row(1, 0.50, 0.70, 0.48, 0.69), _row(2, 0.60, 0.75, 0.58, 0.74), _row(3, 0.55, 0.82, 0.56, 0.79),
           _row(4, 0.56, 0.78, 0.57, 0.77)]


def _config(select, patience=None):
    return SimpleNamespace(method="bitonic", p_k=(0.5, 0, 0, 0, 0.5), select=select, patience=patience)


def test_per_metric_selection_takes_each_top_k_at_its_best_validation():
    summary = summarize(_config("per-metric"), HISTORY, 100)
    assert summary["test"] == {"top1": 0.58, "top5": 0.79}  # top-1 of epoch 2, top-5 of epoch 3
    assert summary["picked"] == {"top1": {"epoch": 2, "step": 20}, "top5": {"epoch": 3, "step": 30}}
    assert summary["score"]["epoch"] == 3 and summary["score"]["test"] == {"top1": 0.56, "top5": 0.79}
    assert summary["still_improving"] == [] and summary["seconds"] == 4.0


def test_score_selection_takes_one_evaluation():
    summary = summarize(_config("score"), HISTORY, 100)
    assert summary["test"] == {"top1": 0.56, "top5": 0.79} and summary["picked"] == {"score": {"epoch": 3,
                                                                                               "step": 30}}
    assert summary["per_metric"]["top1"] == {"epoch": 2, "step": 20, "test": 0.58}


def test_the_earliest_of_equal_values_wins():
    history = [_row(1, 0.5, 0.7, 0.1, 0.1), _row(2, 0.5, 0.7, 0.9, 0.9)]
    assert best_row(history, "score")["epoch"] == 1
    assert summarize(_config("per-metric"), history, 10)["still_improving"] == []


@pytest.mark.parametrize(("select", "improving"), [("per-metric", ["top5"]), ("score", ["score"])])
def test_a_best_last_evaluation_is_still_improving(select, improving):
    history = [*HISTORY, _row(5, 0.59, 0.83, 0.57, 0.80)]
    assert summarize(_config(select), history, 100)["still_improving"] == improving


def test_convergence_compares_the_last_patience_epochs_with_the_ones_before():
    # HISTORY, patience 2: epochs 3-4 beat epochs 1-2 on top-5 (.82 > .75), so it goes on
    assert not converged(_config("per-metric", 2), HISTORY)
    assert stopping(_config("per-metric", 2), HISTORY)["reason"] == "cap"
    # with score selection too: the score of epoch 3 (.685) beats epochs 1-2's best (.675)
    assert not converged(_config("score", 2), HISTORY)
    flat = [*HISTORY, _row(5, 0.56, 0.80, 0.5, 0.5), _row(6, 0.50, 0.81, 0.5, 0.5)]  # no better than 3-4
    assert converged(_config("per-metric", 2), flat)
    assert stopping(_config("per-metric", 2), flat) == {
        "reason": "converged", "epoch": 6,
        "text": "converged at epoch 6: its last 2 epochs were no better on validation than the 2 before"}
    assert not converged(_config("per-metric", 4), flat)  # fewer than 2 x 4 epochs so far
    assert not converged(_config("per-metric", 0), flat) and not converged(_config("per-metric"), flat)
    assert stopping(_config("per-metric"), flat)["reason"] == "schedule"
    # a run climbing back from an early peak is still improving, though its best is long past
    climbing = [_row(e, v, 0.5, 0.5, 0.5) for e, v in enumerate((0.9, 0.3, 0.4, 0.5, 0.6), start=1)]
    assert not converged(_config("per-metric", 2), climbing)
