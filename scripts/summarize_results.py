"""One table over several sweeps (one per data set): for each setting, its paired difference to
softmax on every data set, as docs/results.md reports it.

Usage::

    python scripts/summarize_results.py RUN_FOLDER [RUN_FOLDER ...]

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

from softtopk.experiments.report import METRICS, SOFTMAX, paired_difference

SETTINGS = ("method", "p_k", "m", "inverse_temperature")  # what tells the rows apart


def _label(result: dict) -> str:
    extra = [f"{key} {result[key]}" for key in SETTINGS[2:] if result.get(key) is not None]
    if result.get("inverse_temperature") is not None and result.get("m") is None:  # a relaxation
        extra.insert(0, "all classes")
    return f"{result['method']} {result['p_k']}" + (f" ({', '.join(extra)})" if extra else "")


def _cell(runs: list[dict], softmax: list[dict]) -> str:
    if runs[0]["method"] == SOFTMAX:
        return " / ".join(f"{100 * statistics.fmean(r[m] for r in runs):.2f}" for m in METRICS)
    parts = []
    for metric in METRICS:
        diffs, significant = paired_difference({r["seed"]: r[metric] for r in runs},
                                               {r["seed"]: r[metric] for r in softmax})
        if not diffs:
            return "–"
        parts.append(f"{100 * statistics.fmean(diffs):+.2f}{'' if significant else '~'}")
    return " / ".join(parts)


def summarize(folders: list[Path]) -> str:
    """The Markdown table: a row per setting, a column per folder's data set."""
    columns, rows = [], {}
    for folder in folders:
        name = json.loads((folder / "sweep.json").read_text())["data"]["name"]
        results = json.loads((folder / "results.json").read_text())
        columns.append(name)
        softmax = [r for r in results if r["method"] == SOFTMAX]
        groups: dict[str, list[dict]] = {}
        for r in results:
            groups.setdefault(_label(r), []).append(r)
        for label, runs in groups.items():
            rows.setdefault(label, {})[name] = _cell(runs, softmax)
    lines = ["| setting | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for label, cells in rows.items():
        lines.append(f"| {label} | " + " | ".join(cells.get(c, "") for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run folders of softtopk sweep")
    print(summarize(parser.parse_args().folders))


if __name__ == "__main__":
    main()
