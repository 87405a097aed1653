"""A grid of runs from a TOML file (or one setting over several seeds), run one after another into
one folder, and its report.

File format (see the shipped `configs/*.toml`)::

    command = "finetune"            # or "train"
    data = "wordnet"                # a data set name or a file path, as --data
    # data_dir = "..."              # as --data-dir (cifar100)

    [training]                      # settings shared by every run: epochs, batch_size, lr, seed, ...
    seed = [0, 1, 2]

    [[grid]]                        # one block of runs; every list-valued key is an axis
    method = ["bitonic", "neuralsort"]
    p_k = [[0, 0, 0, 0, 1], [0.5, 0, 0, 0, 0.5]]   # a list of P_K (a single P_K may be given flat)

The runs of a block are the product of its axes; the sweep is the blocks' runs in order, the whole
grid of the first seed first (so a sweep stopped early has complete comparisons). Keys are
the options' names (the command line's long options with `_` for `-`); what a run leaves out takes
the defaults of `softtopk COMMAND --help`. A method setting (inverse_temperature, m, distribution,
art_lambda, top1_mode, tau, alpha) applies only to the methods that use it. TOML has no null: write
`m = "none"` (any option that takes none) for the command line's `--top-m none`.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from softtopk_experiments.data.records import data_spec
from softtopk_experiments.data.splits import Splits
from softtopk_experiments.files import load_checkpoint, read_json, write_json, write_text
from softtopk_experiments.results.names import (
    BARS,
    CELLS,
    CHECKPOINT,
    CONFIG,
    CURVES,
    LOG,
    RESULTS_CSV,
    RESULTS_JSON,
    RESULTS_MD,
    SUMMARY,
    SWEEP,
    table_metrics,
)
from softtopk_experiments.results.report import (
    legend,
    markdown_table,
    plot_bars,
    plot_curves,
    verdict,
    write_csv,
)
from softtopk_experiments.results.run_folder import check_same_run, read_stored
from softtopk_experiments.results.summary import ADVICE, still_improving_warning
from softtopk_experiments.settings.losses import display_name, format_p_k
from softtopk_experiments.settings.run_config import RunConfig, applying, check_given, make_config
from softtopk_experiments.training.distributed import Group
from softtopk_experiments.training.progress import Progress
from softtopk_experiments.training.trainer import Trainer


class SweepError(ValueError):
    """A problem with a sweep file or one of its runs, told in the file's keys."""


@dataclass(frozen=True)
class Sweep:
    """The runs of a sweep file, before the data is loaded: `runs[i]` are the checked options of run i."""

    protocol: str
    data: dict
    runs: tuple[dict, ...]


def shipped_config(name: str) -> Path | None:
    """The shipped sweep file `name` (with or without '.toml'), or None."""
    stem = name.removesuffix(".toml")
    candidate = resources.files("softtopk_experiments") / "configs" / f"{stem}.toml"
    return Path(str(candidate)) if candidate.is_file() else None


def _read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise SweepError("reading a sweep file needs Python >= 3.11 (tomllib) or the tomli "
                             "package") from None
    try:
        return tomllib.loads(path.read_text())
    except OSError as error:
        raise SweepError(f"cannot read sweep file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise SweepError(f"sweep file {path} is not valid TOML: {error}") from None


def _block_runs(block: dict) -> list[dict]:
    """The product of a grid block's list-valued keys."""
    axes = {}
    for key, value in block.items():
        if key == "p_k":
            is_single = isinstance(value, list) and all(isinstance(p, (int, float)) for p in value)
            axes[key] = [value] if is_single else value
        else:
            axes[key] = value if isinstance(value, list) else [value]
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def load_sweep(path: str | Path, data: str | None = None, data_dir: str | None = None,
               overrides: Mapping[str, object] | None = None) -> Sweep:
    """Read and check a sweep file (a path, or the name of a shipped one such as 'wordnet').
    `data`, `data_dir` and `overrides` (option values; `seed` a tuple of seeds) replace the file's.
    Raises ValueError naming the problem."""
    file = Path(path)
    if not file.is_file():
        file = shipped_config(str(path)) or file
    if not file.is_file():
        raise SweepError(f"sweep file {path} does not exist (nor is it a shipped config)")
    doc = _read_toml(file)
    unknown = sorted(set(doc) - {"command", "data", "data_dir", "training", "grid", "description"})
    if unknown:
        raise SweepError(f"sweep file {file}: unknown key {unknown[0]!r}")
    protocol = doc.get("command")
    try:
        check_given(protocol, {})
    except ValueError as error:
        raise SweepError(f"sweep file {file}: {error}") from None
    default_data = "wordnet" if protocol == "finetune" else "glyphs"
    spec = data_spec(protocol, data or doc.get("data", default_data), data_dir or doc.get("data_dir"))
    overrides = dict(overrides or {})
    seeds = overrides.pop("seed", None)
    blocks = doc.get("grid")
    if not isinstance(blocks, list) or not blocks:
        raise SweepError(f"sweep file {file}: needs at least one [[grid]] block")
    runs = []
    for block in blocks:
        block = {**doc.get("training", {}), **block, **overrides}
        if seeds is not None:  # the given seeds replace the file's
            block.pop("seed", None)
        for run in _block_runs(block):
            for seed in (run.get("seed"),) if seeds is None else seeds:
                given = {**run, **({} if seed is None else {"seed": seed})}
                try:
                    runs.append(applying(check_given(protocol, given)))
                except (ValueError, TypeError) as error:
                    raise SweepError(f"sweep file {file}, run {given}: {error}") from None
    order = list(dict.fromkeys(run.get("seed", 0) for run in runs))
    runs.sort(key=lambda run: order.index(run.get("seed", 0)))  # the whole grid of one seed, then the next
    return Sweep(protocol, spec, tuple(runs))


def sweep_configs(sweep: Sweep, splits: Splits) -> tuple[list[RunConfig], list[str]]:
    """The run configurations of a sweep on its loaded data, and their cell folder names."""
    configs = []
    for given in sweep.runs:
        try:
            configs.append(make_config(sweep.protocol, sweep.data, splits, given))
        except (ValueError, TypeError) as error:
            raise SweepError(f"sweep run {given}: {error}") from None
    return configs, cell_names(configs)


def cell_names(configs: Sequence[RunConfig]) -> list[str]:
    """`NN-method-P_K`, with `-seedS` when the runs have several seeds."""
    several = len({config.seed for config in configs}) > 1
    return [f"{i:02d}-{c.method}-{'-'.join(f'{p:g}' for p in c.p_k)}" + (f"-seed{c.seed}" if several else "")
            for i, c in enumerate(configs)]


def check_resumable(out: Path, configs: Sequence[RunConfig], names: Sequence[str]) -> None:
    """`out` must hold this sweep's runs (any epochs); else ValueError."""
    stored = read_stored(out, "sweep")
    if stored.get("runs") != [config.identity() for config in configs]:
        raise ValueError(f"`resume`: {out} holds a different sweep (the settings of its runs differ)")
    for config, name in zip(configs, names, strict=True):
        cell = Path(out) / CELLS / name
        if (cell / CONFIG).exists():
            check_same_run(cell, config.identity(), config.epochs, checkpoint_epoch(cell))


def checkpoint_epoch(folder: Path) -> int | None:
    """The epoch of the checkpoint in `folder`, or None."""
    path = Path(folder) / CHECKPOINT
    return load_checkpoint(path, mmap=True)["epoch"] if path.exists() else None


def run_sweep(configs: Sequence[RunConfig], names: Sequence[str], splits: Splits, out: Path,
              resume: bool = False, device: str = "cpu", group: Group | None = None,
              progress: Progress | bool = True, runtime: dict | None = None) -> tuple[str, list[str]]:
    """Run every cell not yet finished in `out/cells/`, then write the report; returns what
    `write_report` does (empty on processes other than the main one). Finished cells (with
    summary.json) are skipped on resume; a started one continues."""
    group = group or Group()
    out = Path(out)
    if group.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / SWEEP, {"data": configs[0].data, "runs": [c.identity() for c in configs]})
    cells = [(out / CELLS / name, config) for config, name in zip(configs, names, strict=True)]
    done = [resume and _finished(cell, config) for cell, config in cells]
    if resume and group.is_main:
        print(f"resuming {out}: {sum(done)} of {len(configs)} runs finished", file=sys.stderr, flush=True)
    for i, ((cell, config), name) in enumerate(zip(cells, names, strict=True)):
        if done[i]:
            continue
        seed = f" seed {config.seed}" if "seed" in name else ""
        label = f"[{i + 1}/{len(configs)} {config.method} {format_p_k(config.p_k)}{seed}] "
        trainer = Trainer(config, splits, cell, device=device, group=group, progress=progress, label=label,
                          runtime=runtime)
        trainer.run(resume=resume and (cell / CONFIG).exists())
    return write_report(out, cells) if group.is_main else ("", [])


def _finished(cell: Path, config: RunConfig) -> bool:
    summary = cell / SUMMARY
    if not summary.exists():
        return False
    stored = read_json(summary)
    return stored["epochs"] == config.epochs or stored.get("stopped", {}).get("reason") == "converged"


def result_row(config: RunConfig, summary: dict, metrics: Sequence[str]) -> dict:
    """One run's line of the results CSV: method, P_K, its settings (`epochs` the cap where
    `patience` applies), seed, the epoch it stopped at and why, selected epochs, test accuracies."""
    settings = {key: value for key, value in config.settings.items() if key not in ("method", "p_k", "seed")}
    picked = summary["picked"]
    return {"method": display_name(config.method), "p_k": format_p_k(config.p_k), **settings,
            "seed": config.seed, "last_epoch": summary["epochs"],
            "stopped": summary.get("stopped", {}).get("reason"),
            "best_epoch": "/".join(str(pick["epoch"]) for pick in picked.values()),
            "still_improving": bool(summary["still_improving"]),
            **{metric: summary["test"].get(metric) for metric in metrics}}


def write_report(out: Path, runs: Sequence[tuple[Path, RunConfig]]) -> tuple[str, list[str]]:
    """From finished run folders: `out/results.md` (the table, its legend and the runs still
    improving at their end), `results.csv`, `results.json`, `curves.png` and `bars.png`. Returns
    results.md's text and the warnings to show (a line for runs still improving)."""
    rows, histories, bars, methods, labels, warnings = [], {}, {}, {}, {}, []
    improving: dict[str, list[int]] = {}
    metrics = table_metrics([config.p_k for _, config in runs])
    for folder, config in runs:
        summary = read_json(Path(folder) / SUMMARY)
        rows.append(result_row(config, summary, metrics))
        setting = json.dumps({k: v for k, v in config.identity()["settings"].items() if k != "seed"},
                             sort_keys=True)
        if setting not in labels:
            label = config.label
            labels[setting] = label if label not in labels.values() else f"{label} ({len(labels) + 1})"
        label = labels[setting]
        histories.setdefault(label, []).append(
            [json.loads(line) for line in (Path(folder) / LOG).read_text().splitlines()])
        bars.setdefault(label, []).append(summary["test"])
        methods[label] = config.method
        warning = still_improving_warning(label, summary)
        if warning:
            warnings.append(warning)
            improving.setdefault(label, []).append(config.seed)
    table = markdown_table(rows, metrics)
    line = verdict(rows)
    text = table + (f"\n{line}\n" if line else "") + "\n" + legend(table) + "\n"
    if improving:
        listed = "; ".join(f"{label} (seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))})"
                           for label, seeds in improving.items())
        text += f"\nStill improving at the last evaluation ({ADVICE}): {listed}.\n"
    if len(runs) > 1 and warnings:
        warnings = [f"{len(warnings)} of {len(runs)} runs were still improving at their last evaluation; "
                    f"{ADVICE} (listed in {out / RESULTS_MD})"]
    write_text(out / RESULTS_MD, text)
    write_csv(out / RESULTS_CSV, rows)
    write_json(out / RESULTS_JSON, rows)
    plot_curves(histories, out / CURVES, groups=methods)
    plot_bars(bars, out / BARS)
    return text, warnings
