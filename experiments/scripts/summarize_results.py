"""One table over several sweeps (one per data set): for each setting, its paired difference to
softmax on every data set, as docs/results.md reports it.

Usage::

    python experiments/scripts/summarize_results.py RUN_FOLDER [RUN_FOLDER ...]

Each RUN_FOLDER is the `--out` of a `softtopk sweep` (its `results.json` and `sweep.json`). A cell
is Δ top-1 / Δ top-5 in points, the mean over seeds of the per-seed difference to the softmax run
with the same other settings, with `~` where a paired t-test does not tell it from 0 at the 95%
level; the softmax row gives its own accuracies.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from softtopk_experiments.results.names import RESULTS_JSON, SWEEP, TABLE_METRICS
from softtopk_experiments.results.report import SOFTMAX, metric_difference, setting_groups, shown_settings


def _label(result: dict, shown: list[str]) -> str:
    extra = [f"{key} {result.get(key)}" for key in shown[2:] if result.get(key) is not None]
    if result.get("inverse_temperature") is not None and result.get("m") is None:  # a relaxation
        extra.insert(0, "all classes")
    return f"{result['method']} {result['p_k']}" + (f" ({', '.join(extra)})" if extra else "")


def _cell(group: list[dict], baseline: list[dict] | None) -> str:
    if group[0]["method"] == SOFTMAX:
        return " / ".join(f"{100 * statistics.fmean(r[m] for r in group):.2f}" for m in TABLE_METRICS)
    if baseline is None:
        return "–"
    parts = []
    for metric in TABLE_METRICS:
        diffs, significant = metric_difference(group, baseline, metric)
        if not diffs:
            return "–"
        parts.append(f"{100 * statistics.fmean(diffs):+.2f}{'' if significant else '~'}")
    return " / ".join(parts)


def summarize(folders: list[Path]) -> str:
    """The Markdown table: a row per setting, a column per folder's data set."""
    sweeps = {json.loads((folder / SWEEP).read_text())["data"]["name"]:
              json.loads((folder / RESULTS_JSON).read_text()) for folder in folders}
    shown = list(dict.fromkeys(key for results in sweeps.values() for key in shown_settings(results)))
    rows: dict[str, dict[str, str]] = {}
    for name, results in sweeps.items():
        for group, baseline in setting_groups(results):
            rows.setdefault(_label(group[0], shown), {})[name] = _cell(group, baseline)
    lines = ["| setting | " + " | ".join(sweeps) + " |", "|---|" + "---|" * len(sweeps)]
    for label, cells in rows.items():
        lines.append(f"| {label} | " + " | ".join(cells.get(c, "") for c in sweeps) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run folders of softtopk sweep")
    print(summarize(parser.parse_args().folders))


if __name__ == "__main__":
    main()
