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
WRAPPER = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
from softtopk_experiments import cli
from test_cli_distributed import tiny
cli.load_data = tiny
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


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_torchrun_two_cpu_processes(tmp_path, monkeypatch, capsys):
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER)
    src = str(Path(cli.__file__).parents[2])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    train, finetune = tmp_path / "train", tmp_path / "finetune"
    commands = (f"train --width 2 --epochs 2 --batch-size 40 --out {train} --no-progress --and "
                f"{FINETUNE} --out {finetune} --no-progress")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(wrapper),
         *commands.split()], env=env, capture_output=True, text=True, timeout=120)
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
