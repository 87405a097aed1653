"""The training loop: run files, evaluations, bit-exact resume after a kill, mixing."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

import pytest
import torch

from softtopk.metrics import topk_accuracy
from softtopk_experiments.data.splits import Splits
from softtopk_experiments.files import load_checkpoint, write_atomic
from softtopk_experiments.settings.run_config import check_given, make_config
from softtopk_experiments.training import trainer
from softtopk_experiments.training.objective import FusedObjective, LogitsObjective
from softtopk_experiments.training.progress import Progress
from softtopk_experiments.training.trainer import Trainer


def _features(n=400, test=100, d=8, c=10, seed=0) -> Splits:
    """Gaussian clusters: learnable in a few epochs, but not perfectly."""
    g = torch.Generator().manual_seed(seed)
    centers = 1.5 * torch.randn(c, d, generator=g)
    y = torch.randint(0, c, (n + test,), generator=g)
    x = centers[y] + torch.randn(n + test, d, generator=g)
    return Splits(x[:n], y[:n], x[n:], y[n:], c)


def _images(n=48, test=12, c=6, seed=0) -> Splits:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n + test, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.arange(n + test) % c
    return Splits(x[:n], y[:n], x[n:], y[n:], c)


def _config(epochs=4, **given):
    options = {"method": "bitonic", "p_k": (0.5, 0, 0, 0, 0.5), "m": 8, "epochs": epochs, "batch_size": 64,
               "lr": 0.02, "val_size": 0.2, "eval_every": 3, **given}
    return make_config("finetune", {"name": "wordnet"}, _features(), check_given("finetune", options))


def _numbers(summary: dict) -> dict:
    return {key: value for key, value in summary.items() if key != "seconds"}


def _log(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


class _Killed(Exception):
    pass


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    summary = Trainer(_config(), _features(), out, progress=False).run()
    return out, summary


def test_run_writes_its_files_and_evaluates_every_n_iterations(uninterrupted):
    out, summary = uninterrupted
    assert {p.name for p in out.iterdir()} == {"config.json", "log.jsonl", "summary.json", "checkpoint.pt",
                                               "best.pt"}
    log = _log(out)
    # 320 training samples in batches of 64: 5 iterations an epoch, evaluated after the 3rd and the 5th
    assert [(row["epoch"], row["iteration"], row["step"]) for row in log[:4]] == [(1, 3, 3), (1, 5, 5),
                                                                               (2, 3, 8), (2, 5, 10)]
    assert len(log) == 8
    for row in log:  # the score is the P_K-weighted validation accuracy
        assert row["score"] == pytest.approx(0.5 * row["val_top1"] + 0.5 * row["val_top5"])
        assert 0 <= row["test_top1"] <= row["test_top5"] <= row["test_top10"] <= 1
    best1 = max(log, key=lambda row: (row["val_top1"], -row["step"]))
    assert summary["test"]["top1"] == best1["test_top1"] and summary["select"] == "per-metric"
    assert summary["val_size"] == 80 and summary["test"]["top5"] > 0.5  # it learned something
    assert json.loads((out / "summary.json").read_text()) == summary
    stored = json.loads((out / "config.json").read_text())["config"]
    assert stored == _config().to_dict()
    best = max(log, key=lambda row: (row["score"], -row["step"]))
    assert load_checkpoint(out / "best.pt")["epoch"] == best["epoch"] == summary["score"]["epoch"]


def test_evaluating_in_the_middle_of_an_epoch_leaves_the_training_unchanged(uninterrupted, tmp_path):
    full_out, _ = uninterrupted
    Trainer(_config(eval_every=0), _features(), tmp_path, progress=False).run()
    assert [row["iteration"] for row in _log(tmp_path)] == [5, 5, 5, 5]
    a, b = load_checkpoint(tmp_path / "checkpoint.pt"), load_checkpoint(full_out / "checkpoint.pt")
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(uninterrupted, tmp_path, monkeypatch, capsys):
    full_out, full = uninterrupted
    write_jsonl = trainer.write_jsonl

    def die_after_second_checkpoint(path, rows):
        if rows[-1]["epoch"] == 2:  # epoch 2's checkpoint is on disk, its log lines are not
            raise _Killed
        write_jsonl(path, rows)

    monkeypatch.setattr(trainer, "write_jsonl", die_after_second_checkpoint)
    with pytest.raises(_Killed):
        Trainer(_config(), _features(), tmp_path, progress=False).run()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2
    assert len(_log(tmp_path)) == 2 and not (tmp_path / "summary.json").exists()
    monkeypatch.setattr(trainer, "write_jsonl", write_jsonl)
    resumed = Trainer(_config(), _features(), tmp_path, progress=False).run(resume=True)
    assert f"resuming {tmp_path} after epoch 2 of 4" in capsys.readouterr().err
    assert _numbers(resumed) == _numbers(full)
    assert _log(tmp_path) == _log(full_out)
    a, b = load_checkpoint(tmp_path / "checkpoint.pt"), load_checkpoint(full_out / "checkpoint.pt")
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])


def test_a_finished_run_extended_with_more_epochs_matches_the_longer_run(uninterrupted, tmp_path):
    full_out, full = uninterrupted
    Trainer(_config(epochs=2), _features(), tmp_path, progress=False).run()
    extended = Trainer(_config(epochs=4), _features(), tmp_path, progress=False).run(resume=True)
    assert _numbers(extended) == _numbers(full) and _log(tmp_path) == _log(full_out)


def test_one_plain_line_per_epoch_when_stderr_is_a_log(tmp_path):
    log = io.StringIO()
    Trainer(_config(epochs=2), _features(), None, progress=Progress(True, log), label="[run] ").run()
    lines = log.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in log.getvalue()
    assert lines[0].startswith("[run] epoch 1/2: train loss ") and "val top-1 " in lines[0]
    assert lines[2] == "[run] cap reached: 2 epochs, still improving over 5-epoch windows"  # the default


def _stops(history: list[dict], patience: int) -> int:
    """The epoch a run with `patience` stops at, from a fixed-schedule run's evaluations: the first
    epoch e >= 2 patience at which neither validation top-1 nor top-5 is higher in epochs
    (e - patience, e] than in (e - 2 patience, e - patience]."""
    def best(key, low, high):
        return max(row[key] for row in history if low < row["epoch"] <= high)

    for epoch in range(2 * patience, history[-1]["epoch"] + 1):
        if all(best(key, epoch - patience, epoch) <= best(key, epoch - 2 * patience, epoch - patience)
               for key in ("val_top1", "val_top5")):
            return epoch
    return history[-1]["epoch"]


def test_patience_stops_a_run_when_its_selection_metrics_stop_improving_and_resumes_intact(tmp_path):
    fixed_out, stopped_out, resumed_out = tmp_path / "fixed", tmp_path / "stopped", tmp_path / "resumed"
    fixed = Trainer(_config(epochs=40, patience=0, lr=0.05), _features(), fixed_out, progress=False).run()
    assert fixed["epochs"] == 40 and fixed["stopped"]["reason"] == "schedule"
    expected = _stops(_log(fixed_out), 2)
    assert expected < 40  # the tiny set converges well within the cap
    stopped = Trainer(_config(epochs=40, patience=2, lr=0.05), _features(), stopped_out, progress=False).run()
    assert stopped["epochs"] == expected and stopped["stopped"] == {
        "reason": "converged", "epoch": expected,
        "text": f"converged at epoch {expected}: its last 2 epochs were no better on validation than the 2 "
                "before"}
    assert not stopped["still_improving"]
    assert _log(stopped_out) == [row for row in _log(fixed_out) if row["epoch"] <= expected]
    # killed after some epoch before the stop: the resumed run stops at the same epoch, same numbers
    Trainer(_config(epochs=expected - 1, patience=2, lr=0.05), _features(), resumed_out, progress=False).run()
    resumed = Trainer(_config(epochs=40, patience=2, lr=0.05), _features(), resumed_out,
                      progress=False).run(resume=True)
    assert _numbers(resumed) == _numbers(stopped) and _log(resumed_out) == _log(stopped_out)
    # a converged run resumed with a larger cap trains no further
    again = Trainer(_config(epochs=60, patience=2, lr=0.05), _features(), stopped_out,
                    progress=False).run(resume=True)
    assert again["epochs"] == expected


def test_patience_is_the_default_on_data_that_is_not_the_papers_and_the_paper_keeps_its_schedule():
    ours = make_config("finetune", {"name": "wordnet"}, _features(), check_given("finetune", {}))
    assert ours.patience == 5 and ours.epochs == 100
    rule = "convergence rule (data that is not the paper's)"
    assert ours.sources["patience"] == ours.sources["epochs"] == rule
    assert _config(patience=0).patience == 0 and _config(patience=None).patience is None
    papers = make_config("train", {"name": "cifar100", "folder": "x"}, _images(), check_given("train", {}))
    assert papers.patience is None and papers.epochs == 200


@pytest.mark.parametrize("given", [{"method": "bitonic", "hidden": 6},
                                   {"method": "softmax", "label_smoothing": 0.1},
                                   {"method": "softsort", "amp": "bf16"}])
def test_the_fused_head_trains_as_the_logits_do(tmp_path, given):
    """The same run with the head's loss fused and from logits: the same numbers, up to rounding."""
    logs = []
    for head in ("fused", "logits"):
        options = {"epochs": 2, "batch_size": 64, "lr": 0.02, "val_size": 0.2, "eval_every": 3, "head": head,
                   "p_k": (0.5, 0, 0, 0, 0.5) if given["method"] != "softmax" else (1.0,), **given}
        config = make_config("finetune", {"name": "wordnet"}, _features(), check_given("finetune", options))
        run = Trainer(config, _features(), tmp_path / head, progress=False)
        assert isinstance(run.objective, FusedObjective if head == "fused" else LogitsObjective)
        run.run()
        logs.append(_log(tmp_path / head))
    fused, logits = logs
    assert len(fused) == len(logits) == 4
    # the chunks sum in another order, and Adam's normalised steps carry the rounding on (about 2e-5 by
    # epoch 2 for bitonic); under bf16 autocast the logits are rounded differently
    tolerance = 2e-2 if given.get("amp") else 2e-4
    for a, b in zip(fused, logits, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=tolerance, abs=tolerance), key


def test_train_protocol_runs_a_tiny_resnet_with_bf16_autocast(tmp_path):
    options = {"method": "neuralsort", "p_k": (0.5, 0, 0, 0, 0.5), "epochs": 1, "batch_size": 16,
               "val_size": 0.25, "width": 2, "amp": "bf16"}
    config = make_config("train", {"name": "glyphs"}, _images(), check_given("train", options))
    summary = Trainer(config, _images(), tmp_path, progress=False).run()
    assert summary["epochs"] == 1 and summary["val_size"] == 12
    assert set(summary["test"]) == {"top1", "top2", "top3", "top4", "top5"}  # k <= C = 6 only
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["model"]["stem.0.weight"].shape == (2, 1, 3, 3)
    assert state["optimizer"]["state"]  # Adam moments are saved


@pytest.mark.parametrize("mixing", [{"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 0.4, "cutmix": 1.0}])
def test_mixed_batches_train_with_probability_targets_and_resume_exactly(tmp_path, mixing):
    options = {"method": "softmax", "epochs": 2, "batch_size": 16, "val_size": 0.25, "width": 2,
               "label_smoothing": 0.1, **mixing}
    config = make_config("train", {"name": "glyphs"}, _images(), check_given("train", options))
    full = Trainer(config, _images(), tmp_path / "full", progress=False).run()
    short = make_config("train", {"name": "glyphs"}, _images(),
                        check_given("train", {**options, "epochs": 1}))
    Trainer(short, _images(), tmp_path / "part", progress=False).run()
    resumed = Trainer(config, _images(), tmp_path / "part", progress=False).run(resume=True)
    assert _numbers(resumed) == _numbers(full) and _log(tmp_path / "part") == _log(tmp_path / "full")
    assert json.loads((tmp_path / "full" / "config.json").read_text())["config"]["settings"]["mixup"] == \
        mixing.get("mixup", 0.0)


def test_evaluation_sums_the_librarys_top_k_accuracy_over_batches():
    splits = _features()
    trainer = Trainer(_config(), splits, None, progress=False)
    x, y = splits.test_x, splits.test_y
    result = trainer._evaluate(x, y, torch.arange(y.shape[0]), batch_size=7)
    with torch.no_grad():
        expected = topk_accuracy(trainer.model(trainer.prepare(x)).float(), y, trainer.ks)
    assert [result[f"top{k}"] for k in trainer.ks] == pytest.approx([expected[k] for k in trainer.ks])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kill_9_in_the_middle_of_a_checkpoint_write_loses_no_finished_epoch(uninterrupted, tmp_path):
    full_out, full = uninterrupted
    pid = os.fork()
    if pid == 0:  # child: train, and die by SIGKILL halfway through writing epoch 3's checkpoint
        try:
            torch.set_num_threads(1)
            save = trainer.save_checkpoint

            def dying_save(path, state):
                if path.name == "checkpoint.pt" and state["epoch"] == 3:
                    write_atomic(path, lambda f: (f.write(b"half a checkpoint"), f.flush(),
                                                  os.kill(os.getpid(), signal.SIGKILL)))
                save(path, state)

            trainer.save_checkpoint = dying_save
            Trainer(_config(), _features(), tmp_path, progress=False).run()
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2  # the previous one, whole
    assert len(list(tmp_path.glob(".checkpoint.pt.*.tmp"))) == 1  # what the killed writer left
    resumed = Trainer(_config(), _features(), tmp_path, progress=False).run(resume=True)
    assert _numbers(resumed) == _numbers(full) and _log(tmp_path) == _log(full_out)
    assert not list(tmp_path.glob(".*.tmp"))
