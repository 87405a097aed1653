"""Results as the paper shows them: a table of test top-1/top-5 per method and P_K (Markdown and
CSV), accuracy curves per run and a bar chart (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from .runfiles import write_atomic, write_text

METRICS = ("top1", "top5")


def _percent(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def markdown_table(results: list[dict]) -> str:
    """The paper-style table: one row per distinct setting, test accuracies in percent, mean ± std over
    seeds where a setting ran with several. Columns: method, P_K, and each other setting that takes
    more than one value within one method's runs ('–' where a run lacks it).

    `results` are flat dicts with 'method' (display name), 'p_k' (label), 'seed', 'top1', 'top5' (in
    [0, 1]) and any hyper-parameters.
    """
    if not results:
        raise ValueError("results must hold at least one run")
    settings = list(dict.fromkeys(key for r in results for key in r if key not in ("seed", *METRICS)))
    shown = ["method", "p_k"] + [key for key in settings if key not in ("method", "p_k") and len(
        {(r["method"], str(r.get(key))) for r in results}) > len({r["method"] for r in results})]
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        groups.setdefault(tuple(str(result.get(key)) for key in settings), []).append(result)
    several = any(len(group) > 1 for group in groups.values())
    header = ["Method", "P_K", *shown[2:], "Top-1 (%)", "Top-5 (%)"] + (["Runs"] if several else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups.values():
        cells = ["–" if group[0].get(key) is None else str(group[0][key]) for key in shown]
        for metric in METRICS:
            values = [r.get(metric) for r in group]
            cells.append("–" if None in values else _percent(values))
        lines.append("| " + " | ".join(cells + ([str(len(group))] if several else [])) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, results: list[dict]) -> None:
    """One row per run with every field of `results`, the accuracies (fractions) last."""
    keys = list(dict.fromkeys(key for result in results for key in result if key not in METRICS))
    keys += [metric for metric in METRICS if any(metric in result for result in results)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(results)
    write_text(path, buffer.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def plot_curves(histories: dict[str, list[dict]], path: Path, groups: dict[str, str] | None = None) -> None:
    """Validation top-1 and top-5 accuracy per epoch, one line per run (`label -> log rows`). Runs of
    the same group (`groups[label]`, e.g. the method) share a colour and differ in line style."""
    plt = _pyplot()
    groups = groups or {label: label for label in histories}
    colours = {group: f"C{i % 10}" for i, group in enumerate(dict.fromkeys(groups.values()))}
    styles = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
    rank = {label: list(groups.values())[:i].count(groups[label]) for i, label in enumerate(histories)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for metric, ax in zip(METRICS, axes, strict=True):
        for label, rows in histories.items():
            if rows and f"val_{metric}" in rows[0]:
                ax.plot([r["epoch"] for r in rows], [100 * r[f"val_{metric}"] for r in rows], label=label,
                        color=colours[groups[label]], linestyle=styles[rank[label] % len(styles)],
                        marker="." if len(rows) < 30 else None)
        ax.set(title=f"validation top-{metric[3:]}", xlabel="epoch", ylabel="accuracy (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=2, fontsize="small")
    _save(fig, path)
    plt.close(fig)


def plot_bars(results: dict[str, dict[str, float]], path: Path) -> None:
    """Test top-1 and top-5 accuracy at the best epoch per run (`label -> {'top1': .., 'top5': ..}`)."""
    plt = _pyplot()
    labels = list(results)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.2))
    height = 0.4
    for i, metric in enumerate(METRICS):
        values = [100 * results[label].get(metric, float("nan")) for label in labels]
        positions = [j + (i - 0.5) * height for j in range(len(labels))]
        bars = ax.barh(positions, values, height=height, label=f"top-{metric[3:]}")
        ax.bar_label(bars, fmt="%.1f", fontsize="x-small", padding=2)
    ax.set_yticks(range(len(labels)), labels, fontsize="small")
    ax.invert_yaxis()
    ax.set(xlabel="test accuracy at the best validation epoch (%)", xlim=(0, 112))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize="small", frameon=False)
    _save(fig, path)
    plt.close(fig)
