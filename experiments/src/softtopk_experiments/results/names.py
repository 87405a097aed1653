"""The names of a run folder's files and of the metrics in its log and summary, each in one place."""

from __future__ import annotations

CONFIG = "config.json"  # a run's settings and runtime; marks a run folder
LOG = "log.jsonl"  # one row per evaluation
CHECKPOINT = "checkpoint.pt"  # the latest finished epoch
BEST = "best.pt"  # the model of the best P_K-weighted validation score
SUMMARY = "summary.json"  # the run's result
SWEEP = "sweep.json"  # the runs of a sweep (or of several seeds); marks a sweep folder
CELLS = "cells"  # a sweep's folder of run folders
RESULTS_MD, RESULTS_CSV, RESULTS_JSON = "results.md", "results.csv", "results.json"
CURVES, BARS = "curves.png", "bars.png"
LOCK = ".lock"  # the process that holds the folder

TABLE_METRICS = ("top1", "top5")  # the metrics of the plots, and of every results table


def topk(k: int) -> str:
    """The metric of top-k accuracy: 'top1', 'top5', ..."""
    return f"top{k}"


def is_topk(key: str) -> bool:
    """Whether `key` names a top-k metric ('top3')."""
    return key.startswith("top") and key[3:].isdigit()


def table_metrics(p_ks) -> tuple[str, ...]:
    """The metrics of a results table over runs with P_Ks `p_ks`: top-1, top-5 and the top-k of every
    k that one of them weights, in increasing k (a P_K of top-1 and top-3 adds a top-3 column)."""
    ks = {1, 5} | {k for p_k in p_ks for k, p in enumerate(p_k, start=1) if p > 0}
    return tuple(topk(k) for k in sorted(ks))


def k_of(metric: str) -> int:
    """The k of a top-k metric: 'top5' -> 5."""
    return int(metric.removeprefix("top"))


def on(part: str, metric: str) -> str:
    """A metric on 'val' or 'test' as the log names it: 'val_top1', 'test_loss', ..."""
    return f"{part}_{metric}"


def logged_ks(row: dict) -> list[int]:
    """The ks of the test top-k accuracies in a log row, in increasing order."""
    return sorted(k_of(key.removeprefix("test_")) for key in row if key.startswith("test_top"))
