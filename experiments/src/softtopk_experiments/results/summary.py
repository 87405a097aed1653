"""A run's result from its evaluations: model selection on validation, test accuracy reported.

Two selections (`--select`):

- 'per-metric' (the default, the paper's protocol, `train_imagenet.py`/`train_cifar100.py`): for each
  k, the test top-k at the evaluation with the best validation top-k. It compares with the paper's
  tables, and each metric gets the model best for it; the numbers of one row may come from different
  evaluations, so they describe no single model.
- 'score': one evaluation, the best by the P_K-weighted validation accuracy (the expected top-k
  accuracy under P_K, the loss's own target); every number describes that one model, `best.pt`.

Both are computed and stored in summary.json; `test` and `val` hold the selected one. Among equal
validation values the earliest evaluation wins, as in the original.
"""

from __future__ import annotations

from collections.abc import Sequence

from softtopk_experiments.results.names import TABLE_METRICS, k_of, logged_ks, on, topk
from softtopk_experiments.settings.losses import format_p_k, selection_weights

ADVICE = "more `epochs` or a larger `lr` may help"


def score(row: dict, weights: dict[int, float]) -> float:
    """The P_K-weighted validation accuracy of an evaluation row."""
    return sum(w * row[on("val", topk(k))] for k, w in weights.items())


def best_row(history: Sequence[dict], key: str) -> dict:
    """The first row with the highest `row[key]`."""
    return max(enumerate(history), key=lambda item: (item[1][key], -item[0]))[1]


def _pick(row: dict) -> dict:
    return {"epoch": row["epoch"], "step": row["step"]}


def _selected_by(config, history: Sequence[dict]) -> list[str]:
    """The history keys the run selects by: 'score', or the validation top-1 and top-5 (per-metric)."""
    if config.select == "score":
        return ["score"]
    ks = logged_ks(history[0])
    return [on("val", metric) for metric in TABLE_METRICS if k_of(metric) in ks]


def converged(config, history: Sequence[dict]) -> bool:
    """Whether the run stops by `config.patience` E (never with 0 or None): for each metric it selects
    by, the best of the last E epochs' evaluations is no better than the best of the E epochs before
    them. A window, not the best so far: a run that climbs back from an early peak (NeuralSort's
    top-1 after its first epoch) is still improving."""
    patience = config.patience
    if not patience or not history or history[-1]["epoch"] < 2 * patience:
        return False
    last = history[-1]["epoch"]
    recent = [row for row in history if row["epoch"] > last - patience]
    before = [row for row in history if last - 2 * patience < row["epoch"] <= last - patience]
    return all(max(row[key] for row in recent) <= max(row[key] for row in before)
               for key in _selected_by(config, history))


def stopping(config, history: Sequence[dict]) -> dict:
    """Why the run ended: `{"reason": "converged" | "cap" | "schedule", "epoch": e, "text": ...}`."""
    epoch = history[-1]["epoch"]
    if converged(config, history):
        reason, text = "converged", (f"converged at epoch {epoch}: its last {config.patience} epochs were no "
                                     f"better on validation than the {config.patience} before")
    elif config.patience:
        reason, text = "cap", (f"cap reached: {epoch} epochs, still improving over {config.patience}-epoch "
                               f"windows")
    else:
        reason, text = "schedule", f"the fixed schedule of {epoch} epochs"
    return {"reason": reason, "epoch": epoch, "text": text}


def summarize(config, history: Sequence[dict], val_count: int) -> dict:
    """The result of a run with `config` (a RunConfig) from its evaluation rows."""
    ks = logged_ks(history[0])
    by_score = best_row(history, "score")
    per_metric = {topk(k): best_row(history, on("val", topk(k))) for k in ks}
    if config.select == "per-metric":
        chosen, picked = per_metric, {metric: _pick(row) for metric, row in per_metric.items()}
        watched = [m for m in TABLE_METRICS if m in per_metric]
    else:
        chosen, picked = {topk(k): by_score for k in ks}, {"score": _pick(by_score)}
        watched = ["score"]
    last = history[-1]
    rows = {**per_metric, "score": by_score}
    return {
        "method": config.method, "p_k": list(config.p_k), "p_k_label": format_p_k(config.p_k),
        "select": config.select, "epochs": last["epoch"], "evaluations": len(history), "val_size": val_count,
        "test": {metric: row[on("test", metric)] for metric, row in chosen.items()},
        "val": {metric: row[on("val", metric)] for metric, row in chosen.items()},
        "picked": picked,
        "per_metric": {metric: {**_pick(row), "test": row[on("test", metric)]}
                       for metric, row in per_metric.items()},
        "score": {"weights": {topk(k): w for k, w in selection_weights(config.p_k).items()},
                  **_pick(by_score), "test": {topk(k): by_score[on("test", topk(k))] for k in ks}},
        "still_improving": [metric for metric in watched if rows[metric] is last],
        "stopped": stopping(config, history),
        "seconds": sum(row["seconds"] for row in history),
    }


def still_improving_warning(label: str, summary: dict) -> str | None:
    """A one-line warning when the selected evaluation of a watched metric was the run's last."""
    if not summary["still_improving"]:
        return None
    metrics = " and ".join("the P_K-weighted score" if m == "score" else f"top-{k_of(m)}"
                           for m in summary["still_improving"])
    return (f"{label}: the best validation {metrics} came at the last evaluation (epoch "
            f"{summary['epochs']}): still improving; {ADVICE}")
