"""A grid of runs from a TOML file, run one after another into one folder, and its report.

File format (see the shipped `configs/*.toml`)::

    command = "finetune"            # or "train"
    data = "wordnet"                # a data set name or a file path, as --data
    # data_dir = "..."              # as --data-dir (cifar100)

    [training]                      # options shared by every run: epochs, batch_size, lr, ...
    epochs = 20

    [[grid]]                        # one block of runs; every list-valued key is an axis
    method = ["bitonic", "neuralsort"]
    p_k = [[0, 0, 0, 0, 1], [0.5, 0, 0, 0, 0.5]]   # a list of P_K (a single P_K may be given flat)
    m = 16

The runs of a block are the product of its axes; the sweep is the blocks' runs in order.
Option names are the command line's long options with `_` for `-`.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .distributed import Group
from .loss_factory import format_p_k
from .protocols import data_spec, make_config
from .report import markdown_table, plot_bars, plot_curves, write_csv
from .runfiles import read_json, write_json, write_text
from .splits import Splits
from .training import LOG, PROTOCOLS, SUMMARY, TrainConfig, Trainer, check_run_dir

SWEEP = "sweep.json"


@dataclass(frozen=True)
class Sweep:
    """The runs of a sweep file: `configs[i]` goes to the folder `cells/names[i]`."""

    protocol: str
    data: dict
    configs: tuple[TrainConfig, ...]
    names: tuple[str, ...]


def shipped_config(name: str) -> Path | None:
    """The shipped sweep file `name` (with or without '.toml'), or None."""
    stem = name.removesuffix(".toml")
    candidate = resources.files("softtopk.experiments") / "configs" / f"{stem}.toml"
    return Path(str(candidate)) if candidate.is_file() else None


def _read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ValueError("reading a sweep file needs Python >= 3.11 (tomllib) or the tomli "
                             "package") from None
    try:
        return tomllib.loads(path.read_text())
    except OSError as error:
        raise ValueError(f"cannot read sweep file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"sweep file {path} is not valid TOML: {error}") from None


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
               epochs: int | None = None) -> Sweep:
    """Read and check a sweep file (a path, or the name of a shipped one such as 'wordnet').
    `data`, `data_dir` and `epochs` override the file's. Raises ValueError naming the problem."""
    file = Path(path)
    if not file.is_file():
        file = shipped_config(str(path)) or file
    if not file.is_file():
        raise ValueError(f"sweep file {path} does not exist (nor is it a shipped config)")
    doc = _read_toml(file)
    unknown = sorted(set(doc) - {"command", "data", "data_dir", "training", "grid", "description"})
    if unknown:
        raise ValueError(f"sweep file {file}: unknown key {unknown[0]!r}")
    protocol = doc.get("command")
    if protocol not in PROTOCOLS:
        raise ValueError(f"sweep file {file}: command must be one of {', '.join(PROTOCOLS)}; "
                         f"got {protocol!r}")
    default_data = "wordnet" if protocol == "finetune" else "glyphs"
    spec = data_spec(protocol, data or doc.get("data", default_data), data_dir or doc.get("data_dir"))
    shared = dict(doc.get("training", {}))
    if epochs is not None:
        shared["epochs"] = epochs
    blocks = doc.get("grid")
    if not isinstance(blocks, list) or not blocks:
        raise ValueError(f"sweep file {file}: needs at least one [[grid]] block")
    configs, names = [], []
    for block in blocks:
        for run in _block_runs(block):
            try:
                configs.append(make_config(protocol, spec, {**shared, **run}))
            except (ValueError, TypeError) as error:
                raise ValueError(f"sweep file {file}, run {run}: {error}") from None
            p_k = "-".join(f"{p:g}" for p in configs[-1].loss.p_k)
            names.append(f"{len(names):02d}-{configs[-1].loss.method}-{p_k}")
    return Sweep(protocol, spec, tuple(configs), tuple(names))


def check_sweep_dir(out: Path, sweep: Sweep, resume: bool) -> None:
    """`out` must be new or empty, or hold this sweep (any epochs) with `resume`; else ValueError."""
    file = Path(out) / SWEEP
    if not file.exists():
        return
    if not resume:
        raise ValueError(f"{out} already holds a sweep; pass --resume to continue it or choose another --out")
    stored = read_json(file)
    if stored.get("runs") != [config.identity() for config in sweep.configs]:
        raise ValueError(f"--resume: {out} holds a different sweep (the settings of its runs differ)")
    for config, name in zip(sweep.configs, sweep.names, strict=True):
        check_run_dir(Path(out) / "cells" / name, config, resume=True)


def run_sweep(sweep: Sweep, splits: Splits, out: Path, resume: bool = False, device: str = "cpu",
              group: Group | None = None, progress: bool = True) -> str:
    """Run every cell not yet finished in `out/cells/`, then write the report; returns the Markdown
    table. Finished cells (with summary.json) are skipped on resume; a started one continues."""
    group = group or Group()
    out = Path(out)
    if group.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / SWEEP, {"data": sweep.data, "runs": [c.identity() for c in sweep.configs]})
    for i, (config, name) in enumerate(zip(sweep.configs, sweep.names, strict=True)):
        cell = out / "cells" / name
        summary = cell / SUMMARY
        if resume and summary.exists() and read_json(summary)["epochs"] == config.epochs:
            continue
        label = f"[{i + 1}/{len(sweep.configs)} {config.loss.method} {format_p_k(config.loss.p_k)}] "
        trainer = Trainer(config, splits, cell, device=device, group=group, progress=progress, label=label)
        trainer.run(resume=resume)
    if not group.is_main:
        return ""
    cells = zip(sweep.configs, sweep.names, strict=True)
    return write_report(out, [(out / "cells" / name, config) for config, name in cells])


def result_row(config: TrainConfig, summary: dict) -> dict:
    """One run's line of the results table and CSV."""
    return {"method": config.loss.display_name, "p_k": format_p_k(config.loss.p_k),
            **config.loss.hyperparameters(), "lr": config.lr, "epochs": summary["epochs"],
            "seed": config.seed, "best_epoch": summary["best_epoch"],
            "top1": summary["test"].get("top1"), "top5": summary["test"].get("top5")}


def write_report(out: Path, runs: list[tuple[Path, TrainConfig]]) -> str:
    """From finished run folders: `out/results.md`, `results.csv`, `results.json`, `curves.png` and
    `bars.png`. Returns the Markdown table."""
    rows, histories, bars, methods = [], {}, {}, {}
    for folder, config in runs:
        summary = read_json(folder / SUMMARY)
        rows.append(result_row(config, summary))
        label = f"{config.loss.display_name} {format_p_k(config.loss.p_k)}"
        if label in histories:
            label = f"{label} ({folder.name})"
        histories[label] = [json.loads(line) for line in (folder / LOG).read_text().splitlines()]
        bars[label] = summary["test"]
        methods[label] = config.loss.method
    table = markdown_table([{k: v for k, v in row.items() if k != "best_epoch"} for row in rows])
    write_text(out / "results.md", table)
    write_csv(out / "results.csv", rows)
    write_json(out / "results.json", rows)
    plot_curves(histories, out / "curves.png", groups=methods)
    plot_bars(bars, out / "bars.png")
    return table
