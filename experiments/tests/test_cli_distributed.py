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
from softtopk_experiments.files import load_checkpoint

HERE = Path(__file__).parent
# Runs `softtopk` with `loader` (below: `tiny` or `odd`) in place of the loaders; commands are separated
# by `--and`.
WRAPPER = """
import sys
sys.path.insert(0, {here!r})
from softtopk_experiments import cli
from test_cli_distributed import {loader} as loader, failing_report
cli.load_data = loader
if {fail!r}:
    cli.write_report = failing_report
commands = " ".join(sys.argv[1:]).split(" --and ")
sys.exit(max(cli.main(command.split()) for command in commands))
"""
FINETUNE = ("finetune --method splitter_selection --p-k .5,0,0,0,.5 --top-m 6 --epochs 2 --lr 0.05 "
            "--batch-size 45")


def tiny(spec: dict, classes: int = 8) -> Splits:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % classes
    if spec["name"] == "glyphs":
        x = torch.randint(0, 256, (400, 1, 8, 8), generator=g, dtype=torch.uint8)
    else:
        x = 2 * torch.randn(classes, 6, generator=g)[y] + torch.randn(400, 6, generator=g)
    return Splits(x[:320], y[:320], x[320:], y[320:], classes)


def odd(spec: dict) -> Splits:
    """Features of 9 classes: a sharded head's blocks of two processes differ in size (5 and 4)."""
    return tiny(spec, 9)


def failing_report(*args, **kwargs):
    raise RuntimeError("the report failed")


def _torchrun(tmp_path: Path, commands: str, fail: bool = False,
              loader: str = "tiny") -> subprocess.CompletedProcess:
    """`torchrun` of two processes running `commands` (see WRAPPER) on the data of `loader`; with `fail`,
    writing a report fails."""
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER.format(here=str(HERE), fail=fail, loader=loader))
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


# --head sharded: two processes, each with its block of the 9 classes, on the whole batch. A low lr:
# Adam's normalised steps amplify float rounding in the gradients of a relaxation at a high one.
SHARDED = ("finetune --method splitter_selection --p-k .5,0,0,0,.5 --top-m 6 --epochs 2 --lr 0.005 "
           "--batch-size 45 --eval-every 4 --no-progress")
SHARDED_MLP = ("finetune --method softmax --label-smoothing 0.1 --hidden 5 --epochs 2 --lr 0.02 "
               "--batch-size 45 --eval-every 4 --no-progress")
HEAD_WEIGHT = {"probe": ("weight", (9, 6)), "mlp": ("2.weight", (9, 5))}


def _one_process(argv: str, out: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "load_data", odd)
        assert cli.main([*argv.split(), "--out", str(out)]) == 0


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    """Run folders: `probe` and `mlp` trained sharded by two processes; `single-probe`, `single-mlp` the
    same trained by one process with the fused head; `to-sharded` one process's checkpoint after epoch
    1 resumed sharded; `from-sharded` a sharded checkpoint after epoch 1 resumed by one process."""
    tmp = tmp_path_factory.mktemp("sharded")
    _one_process(f"{SHARDED} --epochs 1 --head fused", tmp / "to-sharded")
    commands = [f"{SHARDED} --head sharded --out {tmp / 'probe'}",
                f"{SHARDED_MLP} --head sharded --out {tmp / 'mlp'}",
                f"{SHARDED} --head sharded --resume --out {tmp / 'to-sharded'}",
                f"{SHARDED} --epochs 1 --head sharded --out {tmp / 'from-sharded'}"]
    result = _torchrun(tmp, " --and ".join(commands), loader="odd")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("| Method |") == 4  # only rank 0 reports
    _one_process(f"{SHARDED} --head logits --resume", tmp / "from-sharded")
    _one_process(f"{SHARDED} --head fused", tmp / "single-probe")
    _one_process(f"{SHARDED_MLP} --head fused", tmp / "single-mlp")
    return tmp


def _same_numbers(log: list[dict], reference: list[dict]) -> None:
    assert len(log) == len(reference) == 4
    for row, expected in zip(log, reference, strict=True):
        assert row.keys() == expected.keys()
        for key in row.keys() - {"seconds"}:  # losses, accuracies, score, steps
            assert row[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-7), (row["step"], key)


def _same_tensors(state: dict, reference: dict) -> None:
    assert state.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(state[key], value, rtol=1e-4, atol=1e-6, msg=key)


def _checkpoints(sharded: Path, name: str, *runs: str) -> list[dict]:
    return [load_checkpoint(sharded / run / name) for run in runs]


@pytest.mark.parametrize("run", ["probe", "mlp"])
def test_a_sharded_head_trains_as_one_process(sharded, run):
    """Every number of the log within 1e-5 of one process's; the checkpoints hold the whole model and
    Adam's state, blocks of 5 and 4 classes gathered in order, as one process writes them."""
    _same_numbers(_log(sharded / run), _log(sharded / f"single-{run}"))
    assert json.loads((sharded / run / "config.json").read_text())["runtime"]["processes"] == 2
    for name in ("checkpoint.pt", "best.pt"):
        state, reference = _checkpoints(sharded, name, run, f"single-{run}")
        assert state["epoch"] == reference["epoch"]
        _same_tensors(state["model"], reference["model"])
        key, shape = HEAD_WEIGHT[run]
        assert state["model"][key].shape == shape
    state, reference = (c["optimizer"] for c in _checkpoints(sharded, "checkpoint.pt", run, f"single-{run}"))
    assert state["param_groups"] == reference["param_groups"]
    assert state["state"].keys() == reference["state"].keys()
    for index, moments in reference["state"].items():
        _same_tensors(state["state"][index], moments)


@pytest.mark.parametrize("run", ["to-sharded", "from-sharded"])
def test_checkpoints_resume_sharded_or_on_one_process(sharded, run):
    """One process's checkpoint resumed by two sharded processes, and a sharded checkpoint resumed by
    one process, continue as the uninterrupted one-process run does."""
    _same_numbers(_log(sharded / run), _log(sharded / "single-probe"))
    state, reference = _checkpoints(sharded, "checkpoint.pt", run, "single-probe")
    _same_tensors(state["model"], reference["model"])


def test_sharded_head_errors(tiny_data, fails, tmp_path):
    """Before anything is written: one process; a method without a sharded loss; a relaxation without
    a top-m preselection below the number of classes (8)."""
    out = tmp_path / "out"
    fails(["finetune", "--head", "sharded", "--out", str(out)], "--head sharded splits the head's classes "
          "over the processes of torchrun: run torchrun --nproc_per_node N -m softtopk finetune --head "
          "sharded ... with N >= 2 (this is one process)")
    fails(["finetune", "--head", "sharded", "--method", "smooth_topk", "--p-k", "0,1", "--out", str(out)],
          "--head sharded needs softmax or a relaxation of softtopk, not --method smooth_topk")
    relaxation = ["finetune", "--head", "sharded", "--method", "bitonic", "--p-k", ".5,.5", "--out", str(out)]
    for m in ("none", "8"):
        fails([*relaxation, "--top-m", m], "--head sharded needs --top-m (the top-m preselection) below the "
              f"number of classes (8) with a relaxation: the sharded loss ranks the top-m candidates of all "
              f"classes, never every class (e.g. --top-m 16, the paper's); got {m}")
    assert not out.exists()
