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

from softtopk_experiments.settings.losses import format_p_k, selection_weights

TABLE_METRICS = ("top1", "top5")
ADVICE = "more --epochs or a larger --lr may help"


def score(row: dict, weights: dict[int, float]) -> float:
    """The P_K-weighted validation accuracy of an evaluation row."""
    return sum(w * row[f"val_top{k}"] for k, w in weights.items())


def best_row(history: Sequence[dict], key: str) -> dict:
    """The first row with the highest `row[key]`."""
    return max(enumerate(history), key=lambda item: (item[1][key], -item[0]))[1]


def _pick(row: dict) -> dict:
    return {"epoch": row["epoch"], "step": row["step"]}


def summarize(config, history: Sequence[dict], val_count: int) -> dict:
    """The result of a run with `config` (a RunConfig) from its evaluation rows."""
    ks = sorted(int(key[len("test_top"):]) for key in history[0] if key.startswith("test_top"))
    by_score = best_row(history, "score")
    per_metric = {f"top{k}": best_row(history, f"val_top{k}") for k in ks}
    if config.select == "per-metric":
        chosen, picked = per_metric, {metric: _pick(row) for metric, row in per_metric.items()}
        watched = [m for m in TABLE_METRICS if m in per_metric]
    else:
        chosen, picked = {f"top{k}": by_score for k in ks}, {"score": _pick(by_score)}
        watched = ["score"]
    last = history[-1]
    rows = {**per_metric, "score": by_score}
    return {
        "method": config.method, "p_k": list(config.p_k), "p_k_label": format_p_k(config.p_k),
        "select": config.select, "epochs": last["epoch"], "evaluations": len(history), "val_size": val_count,
        "test": {metric: row[f"test_{metric}"] for metric, row in chosen.items()},
        "val": {metric: row[f"val_{metric}"] for metric, row in chosen.items()},
        "picked": picked,
        "per_metric": {metric: {**_pick(row), "test": row[f"test_{metric}"]}
                       for metric, row in per_metric.items()},
        "score": {"weights": {f"top{k}": w for k, w in selection_weights(config.p_k).items()},
                  **_pick(by_score), "test": {f"top{k}": by_score[f"test_top{k}"] for k in ks}},
        "still_improving": [metric for metric in watched if rows[metric] is last],
        "seconds": sum(row["seconds"] for row in history),
    }


def still_improving_warning(label: str, summary: dict) -> str | None:
    """A one-line warning when the selected evaluation of a watched metric was the run's last."""
    if not summary["still_improving"]:
        return None
    metrics = " and ".join("the P_K-weighted score" if m == "score" else f"top-{m[3:]}"
                           for m in summary["still_improving"])
    return (f"{label}: the best validation {metrics} came at the last evaluation (epoch "
            f"{summary['epochs']}): still improving; {ADVICE}")
