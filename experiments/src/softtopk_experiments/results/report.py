"""Results as the paper shows them, over seeds: a table of test top-1/top-5 (and the other ks the
runs' P_K weight) per setting (mean ± sd
and min–max over seeds), the paired difference to softmax per seed with a verdict on noise, a CSV of
every run, validation curves and a bar chart with error bars (PNG, matplotlib's Agg renderer)."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from softtopk_experiments.files import write_atomic, write_text
from softtopk_experiments.results.names import TABLE_METRICS, is_topk, k_of, on
from softtopk_experiments.settings.losses import display_name
from softtopk_experiments.settings.options import BY_NAME

SOFTMAX = display_name("softmax")
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052,
         2.048, 2.045, 2.042)
"""Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (1.96 beyond)."""
NOT_SETTINGS = ("seed", "last_epoch", "stopped", "best_epoch", "still_improving")  # and the metrics


def legend(table: str) -> str:
    """The sentences that explain a `markdown_table`'s cells."""
    header = table.splitlines()[0]
    text = "Test accuracy (%) at the selected evaluation"
    text += "; over several seeds mean ± sd (min–max)." if "| Seeds |" in header else "."
    if "Δ top-1" in header:
        text += (" Δ: the paired difference to Softmax with the same other settings, per seed, mean ± sd; "
                 "'(noise)': not different from 0 at the 95% level (paired t-test over the seeds); with one "
                 "seed there is no estimate of the noise.")
    return text


def _settings(result: dict) -> list[str]:
    return [key for key in result if key not in NOT_SETTINGS and not is_topk(key)]


def _baseline_key(result: dict) -> tuple:
    """The settings a softmax run must share to be this run's baseline: all but the loss's own. A
    setting a method does not take (None) counts as its generic default, e.g. smooth_topk's label
    smoothing as softmax's 0."""
    def value(key: str) -> str:
        found = result.get(key)
        return str(BY_NAME[key].default if found is None and key in BY_NAME else found)

    shared = {key for key, option in BY_NAME.items() if option.group != "loss"}
    keys = shared | {key for key in _settings(result) if key not in BY_NAME}
    return tuple((key, value(key)) for key in sorted(keys))


def _percent(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return (f"{mean:.2f} ± {100 * statistics.stdev(values):.2f} "
            f"({100 * min(values):.2f}–{100 * max(values):.2f})")


def paired_difference(values: dict[int, float],
                      baseline: dict[int, float]) -> tuple[list[float], bool | None]:
    """Per-seed differences `values[s] - baseline[s]` over the shared seeds, and whether their mean
    differs from 0 at the 95% level by a paired t-test (None with fewer than two seeds)."""
    diffs = [values[s] - baseline[s] for s in sorted(set(values) & set(baseline))]
    if len(diffs) < 2:
        return diffs, None
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    if sd == 0:
        return diffs, mean != 0
    t = abs(mean) / (sd / math.sqrt(len(diffs)))
    return diffs, t > (_T975[len(diffs) - 2] if len(diffs) - 1 <= len(_T975) else 1.96)


def _difference_cell(diffs: list[float], significant: bool | None) -> str:
    if not diffs:
        return "–"
    mean = 100 * statistics.fmean(diffs)
    if significant is None:
        return f"{mean:+.2f} (1 seed)"
    text = f"{mean:+.2f} ± {100 * statistics.stdev(diffs):.2f}"
    return text if significant else f"{text} (noise)"


def shown_settings(results: Sequence[dict]) -> list[str]:
    """'method', 'p_k' and each other setting that takes more than one value within one method's runs."""
    settings = list(dict.fromkeys(key for r in results for key in _settings(r)))
    return ["method", "p_k"] + [key for key in settings if key not in ("method", "p_k") and len(
        {(r["method"], str(r.get(key))) for r in results}) > len({r["method"] for r in results})]


def setting_groups(results: Sequence[dict]) -> list[tuple[list[dict], list[dict] | None]]:
    """The runs of each distinct setting (everything but the seed and the results), each with the
    softmax runs of the same other settings, its baseline (None for softmax itself, or where there
    is none)."""
    settings = list(dict.fromkeys(key for r in results for key in _settings(r)))
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        groups.setdefault(tuple(str(result.get(key)) for key in settings), []).append(result)
    baselines = {_baseline_key(group[0]): group for group in groups.values() if group[0]["method"] == SOFTMAX}
    return [(group, None if group[0]["method"] == SOFTMAX else baselines.get(_baseline_key(group[0])))
            for group in groups.values()]


def metric_difference(group: list[dict], baseline: list[dict],
                      metric: str) -> tuple[list[float], bool | None]:
    """`paired_difference` of one metric between a setting's runs and its baseline's, by seed."""
    return paired_difference({r["seed"]: r[metric] for r in group if r.get(metric) is not None},
                             {r["seed"]: r[metric] for r in baseline if r.get(metric) is not None})


def _listed(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


def verdict(results: Sequence[dict]) -> str | None:
    """One line on what a table compared with softmax over several seeds shows: the settings that
    beat softmax on top-1 or top-5 beyond noise (paired t-test, 95%), those below it, the ties, and
    how the runs stopped. None without a softmax baseline over two or more seeds."""
    beats, below, ties = {m: [] for m in TABLE_METRICS}, {m: [] for m in TABLE_METRICS}, []
    for group, baseline in setting_groups(results):
        if baseline is None:
            continue
        label = f"{group[0]['method']} {group[0]['p_k']}"
        tied = True
        for metric in TABLE_METRICS:
            diffs, significant = metric_difference(group, baseline, metric)
            if significant is None:
                return None
            if significant:
                (beats if statistics.fmean(diffs) > 0 else below)[metric].append(label)
                tied = False
        ties += [label] if tied else []
    if not any(beats.values()) and not any(below.values()) and not ties:
        return None
    names = {metric: f"top-{k_of(metric)}" for metric in TABLE_METRICS}
    line = "; ".join([f"beat softmax beyond noise on {names[m]}: {_listed(beats[m])}" for m in TABLE_METRICS]
                     + [f"below it on {names[m]}: {_listed(below[m])}" for m in TABLE_METRICS]
                     + [f"within noise of it on both: {_listed(ties)}"])
    stops = [r.get("stopped") for r in results]
    if any(stops):
        line += (f" ({stops.count('converged')} of {len(stops)} runs converged, "
                 f"{stops.count('cap')} stopped at the epoch cap)")
    return line[0].upper() + line[1:] + "."


def markdown_table(results: Sequence[dict], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """The paper-style table: one row per distinct setting, test accuracies in percent over its
    seeds, and the paired difference to the softmax row of the same other settings (where there is
    one). Columns: method, P_K, and each other setting that takes more than one value within one
    method's runs.

    `results` are flat dicts with 'method' (display name), 'p_k' (label), 'seed', the `metrics`
    ('top1', 'top5', ...: in [0, 1] or None) and any settings.
    """
    if not results:
        raise ValueError("results must hold at least one run")
    shown = shown_settings(results)
    groups = setting_groups(results)
    compared = any(baseline is not None for _, baseline in groups)
    several = any(len(group) > 1 for group, _ in groups)
    header = ["Method", "P_K", *shown[2:], *(f"Top-{k_of(m)} (%)" for m in metrics)]
    header += [f"Δ top-{k_of(m)}" for m in metrics] if compared else []
    header += ["Seeds"] if several else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group, baseline in groups:
        cells = ["–" if group[0].get(key) is None else str(group[0][key]) for key in shown]
        for metric in metrics:
            values = [r.get(metric) for r in group]
            cells.append("–" if None in values else _percent(values))
        if compared:
            cells += ["–" if baseline is None else
                      _difference_cell(*metric_difference(group, baseline, m)) for m in metrics]
        if several:
            cells.append(str(len(group)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, results: Sequence[dict]) -> None:
    """One row per run with every field of `results`, the accuracies (fractions) last."""
    keys = list(dict.fromkeys(key for result in results for key in result if not is_topk(key)))
    keys += sorted({key for result in results for key in result if is_topk(key)}, key=k_of)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(results)
    write_text(path, buffer.getvalue())


def _figure(width: float, height: float, columns: int = 1):
    from matplotlib.figure import Figure  # imported on use: the report is the only plotting

    figure = Figure(figsize=(width, height))
    return figure, figure.subplots(1, columns, sharex=True, squeeze=False)[0]


def _save(figure, path: Path) -> None:
    write_atomic(path, lambda f: figure.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def _mean_sd(columns: list[list[float]]) -> tuple[list[float], list[float]]:
    means = [statistics.fmean(c) for c in columns]
    return means, [statistics.stdev(c) if len(c) > 1 else 0.0 for c in columns]


def plot_curves(histories: dict[str, list[list[dict]]], path: Path,
                groups: dict[str, str] | None = None) -> None:
    """Validation top-1 and top-5 accuracy against epochs, one line per setting (`label -> the log
    rows of each of its seeds`): the mean over seeds, with a band of ± one sd. Settings of the same
    group (`groups[label]`, e.g. the method) share a colour and differ in line style."""
    groups = groups or {label: label for label in histories}
    colours = {group: f"C{i % 10}" for i, group in enumerate(dict.fromkeys(groups.values()))}
    styles = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
    rank = {label: list(groups.values())[:i].count(groups[label]) for i, label in enumerate(histories)}
    figure, axes = _figure(11, 4.2, columns=2)
    for metric, ax in zip(TABLE_METRICS, axes, strict=True):
        for label, runs in histories.items():
            runs = [rows for rows in runs if rows and on("val", metric) in rows[0]]
            if not runs:
                continue
            length = min(len(rows) for rows in runs)
            rows = runs[0][:length]
            per_epoch = rows[-1]["step"] / rows[-1]["epoch"]
            x = [r["step"] / per_epoch for r in rows]
            mean, sd = _mean_sd([[100 * run[i][on("val", metric)] for run in runs] for i in range(length)])
            colour = colours[groups[label]]
            ax.plot(x, mean, label=label, color=colour, linestyle=styles[rank[label] % len(styles)],
                    marker="." if length < 30 else None)
            if len(runs) > 1:
                ax.fill_between(x, [m - s for m, s in zip(mean, sd, strict=True)],
                                [m + s for m, s in zip(mean, sd, strict=True)], color=colour, alpha=0.15)
        ax.set(title=f"validation top-{k_of(metric)}", xlabel="epoch", ylabel="accuracy (%)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=2, fontsize="small")
    _save(figure, path)


def plot_bars(results: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Test top-1 and top-5 accuracy per setting (`label -> one {'top1': .., 'top5': ..} per seed`):
    the mean over seeds, with error bars of ± one sd where there are several."""
    labels = list(results)
    figure, (ax,) = _figure(8, 0.45 * len(labels) + 1.2)
    height = 0.4
    for i, metric in enumerate(TABLE_METRICS):
        columns = [[100 * run.get(metric, math.nan) for run in results[label]] for label in labels]
        mean, sd = _mean_sd(columns)
        positions = [j + (i - 0.5) * height for j in range(len(labels))]
        several = any(len(c) > 1 for c in columns)
        bars = ax.barh(positions, mean, height=height, label=f"top-{k_of(metric)}",
                       xerr=sd if several else None, capsize=3 if several else 0)
        ax.bar_label(bars, fmt="%.1f", fontsize="x-small", padding=2)
    ax.set_yticks(range(len(labels)), labels, fontsize="small")
    ax.invert_yaxis()
    ax.set(xlabel="test accuracy at the selected evaluation (%)", xlim=(0, 112))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize="small", frameon=False)
    _save(figure, path)
