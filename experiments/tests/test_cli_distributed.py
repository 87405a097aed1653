"""`torchrun --nproc_per_node 2 -m softtopk ...` on the CPU (gloo), on tiny data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from softtopk_experiments import cli
from softtopk_experiments.data.splits import Splits

HERE = Path(__file__).parent
# Runs `softtopk` with `tiny` (below) in place of the loaders; commands are separated by `--and`.
WRAPPER = """
import sys
sys.path.insert(0, {here!r})
from softtopk_experiments import cli
from test_cli_distributed import tiny, failing_report
cli.load_data = tiny
if {fail!r}:
    cli.write_report = failing_report
commands = " ".join(sys.argv[1:]).split(" --and ")
sys.exit(max(cli.main(command.split()) for command in commands))
"""
FINETUNE = ("finetune --method splitter_selection --p-k .5,0,0,0,.5 --top-m 6 --epochs 2 --lr 0.05 "
            "--batch-size 45")


def tiny(spec: dict) -> Splits:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 8
    if spec["name"] == "glyphs":
        x = torch.randint(0, 256, (400, 1, 8, 8), generator=g, dtype=torch.uint8)
    else:
        x = 2 * torch.randn(8, 6, generator=g)[y] + torch.randn(400, 6, generator=g)
    return Splits(x[:320], y[:320], x[320:], y[320:], 8)


def failing_report(*args, **kwargs):
    raise RuntimeError("the report failed")


def _torchrun(tmp_path: Path, commands: str, fail: bool = False) -> subprocess.CompletedProcess:
    """`torchrun` of two processes running `commands` (see WRAPPER); with `fail`, writing a report fails."""
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER.format(here=str(HERE), fail=fail))
    src = str(Path(cli.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(wrapper),
         *commands.split()], env=env, capture_output=True, text=True, timeout=120)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_torchrun_two_cpu_processes(tmp_path, monkeypatch, capsys):
    train, finetune = tmp_path / "train", tmp_path / "finetune"
    commands = (f"train --width 2 --epochs 2 --batch-size 40 --out {train} --no-progress --and "
                f"{FINETUNE} --out {finetune} --no-progress")
    result = _torchrun(tmp_path, commands)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("| Method |") == 2  # one table per command: only rank 0 reports
    for out in (train, finetune):
        assert json.loads((out / "config.json").read_text())["runtime"]["processes"] == 2
        assert len(_log(out)) == 2
        assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind

    # Two processes train on exactly the batches one process sees, with the gradient of the global
    # batch's mean loss (uneven shards included: 45 = 23 + 22): the same run up to float rounding.
    monkeypatch.setattr(cli, "load_data", tiny)
    single = tmp_path / "single"
    assert cli.main([*FINETUNE.split(), "--out", str(single), "--no-progress"]) == 0
    capsys.readouterr()
    # The shards' sums round differently from the whole batch's; after the first epoch the runs may
    # drift further apart, since the top-m preselection is discontinuous where two logits nearly tie.
    for epoch, (two, one) in enumerate(zip(_log(finetune), _log(single), strict=True)):
        for key in ("train_loss", "val_loss", "test_loss"):
            assert two[key] == pytest.approx(one[key], rel=1e-5 if epoch == 0 else 1e-3)
        assert two["val_top1"] == one["val_top1"] and two["test_top5"] == one["test_top5"]


def test_torchrun_failing_process_ends_the_job(tmp_path):
    # The main process fails writing the report while the other one waits for it at the command's end:
    # the job ends with the error (and the next command does not start) instead of waiting forever.
    finetune = tmp_path / "finetune"
    result = _torchrun(tmp_path, f"{FINETUNE} --epochs 1 --out {tmp_path / 'train'} --no-progress --and "
                                 f"{FINETUNE} --out {finetune} --no-progress", fail=True)
    assert result.returncode != 0
    assert "RuntimeError: the report failed" in result.stderr
    assert not finetune.exists()
