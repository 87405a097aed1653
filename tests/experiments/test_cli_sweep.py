from __future__ import annotations

import csv
import json

import pytest

from softtopk.experiments import sweep
from softtopk.experiments.cli import main
from softtopk.experiments.report import markdown_table
from softtopk.experiments.sweep import load_sweep

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
    lines = table.splitlines()
    assert lines[0] == "| Method | P_K | Top-1 (%) | Top-5 (%) |"  # no setting varies but method and P_K
    assert [line.split(" | ")[:2] for line in lines[2:]] == [
        ["| Softmax", "[1, 0, 0, 0, 0]"],
        ["| Bitonic DSN", "[.5, 0, 0, 0, .5]"], ["| Bitonic DSN", "[0, 0, 0, 0, 1]"],
        ["| NeuralSort", "[.5, 0, 0, 0, .5]"], ["| NeuralSort", "[0, 0, 0, 0, 1]"]]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and rows[1]["m"] == "6" and rows[0]["m"] == ""
    for row, line in zip(rows, lines[2:], strict=True):  # the table shows the CSV's numbers in percent
        assert line.endswith(f"| {100 * float(row['top1']):.2f} | {100 * float(row['top5']):.2f} |")
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

    # a changed grid does not mix with the old one
    config.write_text(GRID.replace("m = 6", "m = 7"))
    fails([*argv, "--resume"], "holds a different sweep")


def test_demo_runs_the_shipped_grid(tiny_data, tmp_path, capsys):
    assert main(["demo", "--epochs", "1", "--out", str(tmp_path / "demo"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "Method" not in line]
    assert [row.split(" | ")[:2] for row in rows] == [
        ["| Softmax", "[1, 0, 0, 0, 0]"],
        ["| Bitonic DSN", "[.5, 0, 0, 0, .5]"], ["| Bitonic DSN", "[0, 0, 0, 0, 1]"],
        ["| Splitter sel. DSN", "[.5, 0, 0, 0, .5]"], ["| Splitter sel. DSN", "[0, 0, 0, 0, 1]"],
        ["| NeuralSort", "[.5, 0, 0, 0, .5]"], ["| NeuralSort", "[0, 0, 0, 0, 1]"]]
    assert "7 runs in" in printed


@pytest.mark.parametrize(("text", "message"), [
    ("command = 'finetune'\n[[grid]\n", "is not valid TOML"),
    ("command = 'pretrain'\n[[grid]]\nmethod = 'softmax'\n", "command must be one of finetune, train"),
    ("command = 'finetune'\nepochs = 3\n", "unknown key 'epochs'"),
    ("command = 'finetune'\n", "needs at least one [[grid]] block"),
    ("command = 'finetune'\n[[grid]]\nmethod = 'heapsort'\np_k = [0, 1]\n", "method must be one of"),
    ("command = 'finetune'\n[[grid]]\nmethod = 'bitonic'\np_k = [0, 1]\nlearning_rate = 1\n",
     "unknown option 'learning_rate'"),
    ("command = 'finetune'\n[training]\nlr = 'fast'\n[[grid]]\nmethod = 'softmax'\n",
     "lr must be of type float"),
    ("command = 'train'\n[[grid]]\nmethod = 'softmax'\nhidden = 3\n", "hidden is an option of finetune"),
])
def test_bad_sweep_files_exit_2(tiny_data, tmp_path, capsys, text, message, fails):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    fails(["sweep", str(config), "--out", str(tmp_path / "out")], message)
    assert not (tmp_path / "out").exists()


def test_missing_sweep_file_exits_2(tmp_path, capsys, fails):
    fails(["sweep", str(tmp_path / "nope.toml")], "does not exist")


def test_shipped_grids_are_the_papers():
    expected_p_k = {(0, 0, 0, 0, 1), (0.5, 0, 0, 0, 0.5), (0.25, 0, 0, 0, 0.75), (0.1, 0, 0, 0, 0.9),
                    (0.2,) * 5}
    for name in ("wordnet", "imagenet1k", "cifar100"):
        configs = load_sweep(name, data="emb.pt" if name == "imagenet1k" else None).configs
        by_method: dict[str, list] = {}
        for config in configs:
            by_method.setdefault(config.loss.method, []).append(config.loss)
        assert [loss.p_k for loss in by_method.pop("softmax")] == [(1, 0, 0, 0, 0)]
        assert [(loss.p_k, loss.tau) for loss in by_method.pop("smooth_topk")] == [((0, 0, 0, 0, 1), 1.0)]
        assert set(by_method) == {"bitonic", "splitter_selection", "neuralsort", "softsort"}
        for method, losses in by_method.items():
            assert {loss.p_k for loss in losses} == expected_p_k and len(losses) == 5
            dsn = method in ("bitonic", "splitter_selection")
            if name == "cifar100":
                assert {(loss.inverse_temperature, loss.top1_mode, loss.m) for loss in losses} == {
                    (0.5 if dsn else 0.0625, "smce", None)}
                settings = {(c.epochs, c.batch_size, c.lr, c.val_size) for c in configs}
                assert settings == {(200, 128, 1e-3, 0.05)}
            else:
                assert {(loss.inverse_temperature, loss.m, loss.top1_mode) for loss in losses} == {
                    (1.0 if dsn else 0.5, 16, "sm")}
            if dsn:
                assert {(loss.distribution, loss.art_lambda) for loss in losses} == {("logistic_phi", 0.5)}
    paper = load_sweep("imagenet1k", data="emb.pt").configs[0]
    assert (paper.epochs, paper.batch_size, paper.lr, paper.val_size) == (20, 500, 10**-4.5, 50000)
    assert load_sweep("cifar100", data_dir="/data/c100").data == {"name": "cifar100", "folder": "/data/c100"}


def test_table_aggregates_seeds_and_shows_only_varying_settings():
    runs = [{"method": "Softmax", "p_k": "[1]", "lr": 0.1, "seed": s, "top1": t1, "top5": t5}
            for s, t1, t5 in ((0, 0.5, 0.9), (1, 0.7, 0.8))]
    runs += [{"method": "NeuralSort", "p_k": "[0, 1]", "lr": 0.1, "seed": 0, "inverse_temperature": beta,
              "m": 16, "top1": 0.25, "top5": None} for beta in (0.5, 1.0)]
    table = markdown_table(runs).splitlines()
    assert table[0] == "| Method | P_K | inverse_temperature | Top-1 (%) | Top-5 (%) | Runs |"
    assert table[2] == "| Softmax | [1] | – | 60.00 ± 14.14 | 85.00 ± 7.07 | 2 |"
    assert table[3] == "| NeuralSort | [0, 1] | 0.5 | 25.00 | – | 1 |"
    assert len(table) == 5
    # a setting that only differs between methods (as in the paper's grids) gets no column
    per_method = [{"method": m, "p_k": "[1]", "inverse_temperature": b, "top1": 0.5, "top5": 0.9}
                  for m, b in (("Bitonic DSN", 1.0), ("NeuralSort", 0.5))]
    assert markdown_table(per_method).splitlines()[0] == "| Method | P_K | Top-1 (%) | Top-5 (%) |"
    with pytest.raises(ValueError, match="at least one run"):
        markdown_table([])


def test_results_json_lists_every_run(tiny_data, tmp_path):
    config, out = tmp_path / "grid.toml", tmp_path / "sweep"
    grid = GRID.replace('["bitonic", "neuralsort"]', '"softsort"').replace("epochs = 2", "epochs = 1")
    config.write_text(grid)
    assert main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [(row["method"], row["p_k"], row["epochs"]) for row in rows] == [
        ("Softmax", "[1, 0, 0, 0, 0]", 1), ("SoftSort", "[.5, 0, 0, 0, .5]", 1),
        ("SoftSort", "[0, 0, 0, 0, 1]", 1)]
