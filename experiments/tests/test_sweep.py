"""Sweep files: grids of runs over seeds, run into one folder, resumed cell by cell."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from softtopk.relax import METHODS
from softtopk_experiments import sweep
from softtopk_experiments.cli import main
from softtopk_experiments.data.splits import Splits
from softtopk_experiments.sweep import load_sweep, sweep_configs

GRID = """
command = "finetune"
data = "wordnet"

[training]
epochs = 2
lr = 0.05
batch_size = 64

[[grid]]
method = "softmax"
p_k = [1, 0, 0, 0, 0]

[[grid]]
method = ["bitonic", "neuralsort"]
p_k = [[0.5, 0, 0, 0, 0.5], [0, 0, 0, 0, 1]]
m = 6
"""


def test_sweep_writes_the_table_and_resumes(tiny_data, tmp_path, capsys, monkeypatch, fails):
    config, out = tmp_path / "grid.toml", tmp_path / "sweep"
    config.write_text(GRID)
    argv = ["sweep", str(config), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    table = (out / "results.md").read_text()
    assert capsys.readouterr().out.startswith(table)
    lines = [line for line in table.splitlines() if line.startswith("|")]
    # no setting varies but method and P_K; one seed: differences to softmax without a noise estimate
    assert lines[0] == "| Method | P_K | Top-1 (%) | Top-5 (%) | Δ top-1 | Δ top-5 |"
    assert [line.split(" | ")[:2] for line in lines[2:]] == [
        ["| Softmax", "[1, 0, 0, 0, 0]"],
        ["| Bitonic DSN", "[.5, 0, 0, 0, .5]"], ["| Bitonic DSN", "[0, 0, 0, 0, 1]"],
        ["| NeuralSort", "[.5, 0, 0, 0, .5]"], ["| NeuralSort", "[0, 0, 0, 0, 1]"]]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and rows[1]["m"] == "6" and rows[0]["m"] == ""
    for row, line in zip(rows, lines[2:], strict=True):  # the table shows the CSV's numbers in percent
        cells = line.split(" | ")
        assert cells[2:4] == [f"{100 * float(row['top1']):.2f}", f"{100 * float(row['top5']):.2f}"]
        difference = 100 * (float(row["top1"]) - float(rows[0]["top1"]))
        assert cells[4] == ("–" if row["method"] == "Softmax" else f"{difference:+.2f} (1 seed)")
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert cells[1] == "01-bitonic-0.5-0-0-0-0.5" and len(cells) == 5
    assert all((out / "cells" / c / "summary.json").exists() for c in cells)

    # rerunning needs --resume; then finished cells are skipped and an unfinished one is completed
    fails(argv, "already holds a sweep; pass --resume")
    (out / "cells" / cells[3] / "summary.json").unlink()
    ran = []
    run = sweep.Trainer.run

    def counted_run(self, resume=False):
        ran.append(self.out.name)
        return run(self, resume)

    monkeypatch.setattr(sweep.Trainer, "run", counted_run)
    assert main([*argv, "--resume"]) == 0
    assert ran == [cells[3]]
    assert (out / "results.md").read_text() == table  # same numbers: the cell resumed from its last epoch

    assert "resuming" in capsys.readouterr().err
    # a changed grid does not mix with the old one
    config.write_text(GRID.replace("m = 6", "m = 7"))
    fails([*argv, "--resume"], "holds a different sweep")


def test_demo_runs_the_shipped_grid_to_convergence_and_says_what_its_table_shows(tiny_data, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    rows = [line for line in lines if line.startswith("| ") and "Method" not in line]
    assert [row.split(" | ")[:2] for row in rows] == [
        ["| Softmax", "[1, 0, 0, 0, 0]"], ["| Bitonic DSN", "[.5, 0, 0, 0, .5]"],
        ["| Splitter sel. DSN", "[.5, 0, 0, 0, .5]"], ["| SoftSort", "[.5, 0, 0, 0, .5]"]]
    assert all(row.endswith("| 3 |") for row in rows)  # three seeds each
    assert lines[0].endswith("| Δ top-1 | Δ top-5 | Seeds |")
    assert "12 runs in" in printed
    # no run of the table was still improving at its end: each stopped by patience, well before the cap
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert len(results) == 12
    assert all(r["stopped"] == "converged" and not r["still_improving"] and r["last_epoch"] < r["epochs"]
               for r in results), results
    assert "Still improving" not in printed
    # the line after the table says what it shows, and agrees with the table's '(noise)' marks
    summary = lines[len(rows) + 3]
    assert summary.startswith("Beat softmax beyond noise on top-1: ") and summary.endswith(
        "(12 of 12 runs converged, 0 stopped at the epoch cap).")
    for row in rows[1:]:
        label = " ".join(cell.strip() for cell in row.strip("| ").split(" | ")[:2])
        tied = row.count("(noise)") == 2
        assert (label in summary.split("within noise of it on both: ")[1]) == tied, (label, summary)
    # resumed, every converged run counts as finished, though it stopped before the cap
    table = (tmp_path / "demo" / "results.md").read_text()
    assert main(["demo", "--out", str(tmp_path / "demo"), "--no-progress", "--resume"]) == 0
    assert "12 of 12 runs finished" in capsys.readouterr().err
    assert (tmp_path / "demo" / "results.md").read_text() == table


@pytest.mark.parametrize(("text", "message"), [
    ("command = 'finetune'\n[[grid]\n", "is not valid TOML"),
    ("command = 'pretrain'\n[[grid]]\nmethod = 'softmax'\n", "command must be one of finetune, train"),
    ("command = 'finetune'\nepochs = 3\n", "unknown key 'epochs'"),
    ("command = 'finetune'\n", "needs at least one [[grid]] block"),
    ("command = 'finetune'\n[[grid]]\nmethod = 'heapsort'\np_k = [0, 1]\n", "`method` must be one of"),
    ("command = 'finetune'\n[[grid]]\nmethod = 'bitonic'\np_k = [0, 1]\nlearning_rate = 1\n",
     "unknown option 'learning_rate'"),
    ("command = 'finetune'\n[training]\nlr = 'fast'\n[[grid]]\nmethod = 'softmax'\n",
     "`lr` must be a number"),
    ("command = 'train'\n[[grid]]\nmethod = 'softmax'\nhidden = 3\n", "`hidden` is an option of finetune"),
])
def test_bad_sweep_files_exit_2(tiny_data, tmp_path, capsys, text, message, fails):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    fails(["sweep", str(config), "--out", str(tmp_path / "out")], message)
    assert not (tmp_path / "out").exists()


def test_missing_sweep_file_exits_2(tmp_path, capsys, fails):
    fails(["sweep", str(tmp_path / "nope.toml")], "does not exist")


def _paper_sized(protocol: str) -> Splits:
    """Stand-ins of the paper's data sizes that take no memory (expanded views)."""
    if protocol == "finetune":
        x, n, classes = torch.ones(1, 4).expand(1_281_167, 4), 1_281_167, 1000
    else:
        x, n, classes = torch.zeros(1, 3, 32, 32, dtype=torch.uint8).expand(50_000, 3, 32, 32), 50_000, 100
    y = torch.arange(n) % classes
    return Splits(x, y, x[:10], y[:10], classes)


def test_shipped_grids_are_the_papers():
    expected_p_k = {(0, 0, 0, 0, 1), (0.5, 0, 0, 0, 0.5), (0.25, 0, 0, 0, 0.75), (0.1, 0, 0, 0, 0.9),
                    (0.2,) * 5}
    for name in ("wordnet", "imagenet1k", "cifar100"):
        grid = load_sweep(name, data="emb.pt" if name == "imagenet1k" else None)
        configs, _ = sweep_configs(grid, _paper_sized(grid.protocol))
        by_method: dict[str, list] = {}
        for config in configs:
            by_method.setdefault(config.method, []).append(config)
        seeds = 3 if name == "wordnet" else 1
        assert [c.p_k for c in by_method.pop("softmax")] == [(1, 0, 0, 0, 0)] * seeds
        assert [(c.p_k, c.tau) for c in by_method.pop("smooth_topk")] == [((0, 0, 0, 0, 1), 1.0)] * seeds
        assert set(by_method) == {"bitonic", "splitter_selection", "neuralsort", "softsort"}
        for method, runs in by_method.items():
            assert {c.p_k for c in runs} == expected_p_k and len(runs) == 5 * seeds
            dsn = method in ("bitonic", "splitter_selection")
            if name == "cifar100":
                assert {(c.inverse_temperature, c.top1_mode, c.m) for c in runs} == {
                    (0.5 if dsn else 0.0625, "smce", None)}
                settings = {(c.epochs, c.batch_size, c.lr, c.val_size, c.eval_every) for c in configs}
                assert settings == {(200, 128, 1e-3, 0.05, 0)}
            else:
                assert {(c.inverse_temperature, c.m, c.top1_mode) for c in runs} == {
                    (1.0 if dsn else 0.5, 16, "sm")}
            if dsn:
                assert {(c.distribution, c.art_lambda) for c in runs} == {("logistic_phi", 0.5)}
        assert {c.select for c in configs} == {"per-metric"}
    paper = sweep_configs(load_sweep("imagenet1k", data="emb.pt"), _paper_sized("finetune"))[0][0]
    assert (paper.epochs, paper.batch_size, paper.lr, paper.val_size, paper.eval_every) == (20, 500, 10**-4.5,
                                                                                            None, 100)
    assert load_sweep("cifar100", data_dir="/data/c100").data == {"name": "cifar100", "folder": "/data/c100"}


def test_results_grids_cover_every_relaxation():
    """docs/results.md runs 'methods' and 'engines' on each data set: every relaxation but odd_even
    (the paper's networks are bitonic and splitter selection), each with both P_K, over three seeds."""
    runs = [config for name in ("methods", "engines")
            for config in sweep_configs(load_sweep(name, data="languages"), _paper_sized("finetune"))[0]]
    assert {run.method for run in runs} == {"softmax", "smooth_topk"} | set(METHODS) - {"odd_even"}
    for method in set(METHODS) - {"odd_even"}:
        settings = {(run.seed, run.p_k) for run in runs if run.method == method}
        assert settings == {(seed, p_k) for seed in (0, 1, 2)
                            for p_k in ((0.5, 0, 0, 0, 0.5), (0, 0, 0, 0, 1))}, method
    assert {run.m for run in runs if run.method in ("ot_topk", "lapsum")} == {16, None}
    temperatures = load_sweep("engine_temperatures", data="languages").runs
    assert sorted((run["method"], run["inverse_temperature"]) for run in temperatures) == [
        ("lapsum", 0.25), ("lapsum", 1.0), ("lapsum", 4.0), ("ot_topk", 10.0), ("ot_topk", 100.0),
        ("ot_topk", 1000.0), ("sinkhorn", 1.0), ("sinkhorn", 10.0), ("sinkhorn", 100.0)]


def test_grid_axes_seeds_and_overrides():
    grid = load_sweep("demo")
    assert len(grid.runs) == 12 and [r["seed"] for r in grid.runs] == [0] * 4 + [1] * 4 + [2] * 4
    assert [r["method"] for r in grid.runs[:4]] == ["softmax", "bitonic", "splitter_selection", "softsort"]
    assert not any("epochs" in r or "patience" in r for r in grid.runs)  # the convergence rule's
    short = load_sweep("demo", overrides={"seed": (4, 5), "epochs": 2, "lr": 0.1})
    assert [(r["seed"], r["epochs"], r["lr"]) for r in short.runs] == [(4, 2, 0.1)] * 4 + [(5, 2, 0.1)] * 4


def test_results_json_lists_every_run(tiny_data, tmp_path):
    config, out = tmp_path / "grid.toml", tmp_path / "sweep"
    grid = GRID.replace('["bitonic", "neuralsort"]', '"softsort"').replace("epochs = 2", "epochs = 1")
    config.write_text(grid)
    assert main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [(row["method"], row["p_k"], row["epochs"]) for row in rows] == [
        ("Softmax", "[1, 0, 0, 0, 0]", 1), ("SoftSort", "[.5, 0, 0, 0, .5]", 1),
        ("SoftSort", "[0, 0, 0, 0, 1]", 1)]
