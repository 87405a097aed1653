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

TABLE_METRICS = ("top1", "top5")  # the metrics of the results table and plots


def topk(k: int) -> str:
    """The metric of top-k accuracy: 'top1', 'top5', ..."""
    return f"top{k}"


def k_of(metric: str) -> int:
    """The k of a top-k metric: 'top5' -> 5."""
    return int(metric.removeprefix("top"))


def on(part: str, metric: str) -> str:
    """A metric on 'val' or 'test' as the log names it: 'val_top1', 'test_loss', ..."""
    return f"{part}_{metric}"


def logged_ks(row: dict) -> list[int]:
    """The ks of the test top-k accuracies in a log row, in increasing order."""
    return sorted(k_of(key.removeprefix("test_")) for key in row if key.startswith("test_top"))
