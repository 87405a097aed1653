from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from softtopk.experiments import training
from softtopk.experiments.augment import AUGMENTATIONS
from softtopk.experiments.loss_factory import LossSpec
from softtopk.experiments.runfiles import load_checkpoint, write_atomic, write_json
from softtopk.experiments.splits import Splits
from softtopk.experiments.training import TrainConfig, Trainer, best_epoch, check_fits, check_run_dir


def _features(n=400, test=100, d=8, c=10, seed=0) -> Splits:
    """Gaussian clusters: learnable in a few epochs, but not perfectly."""
    g = torch.Generator().manual_seed(seed)
    centers = 1.5 * torch.randn(c, d, generator=g)
    y = torch.randint(0, c, (n + test,), generator=g)
    x = centers[y] + torch.randn(n + test, d, generator=g)
    return Splits(x[:n], y[:n], x[n:], y[n:], c)


def _config(epochs=4, **loss) -> TrainConfig:
    spec = LossSpec(**{"method": "bitonic", "p_k": (0.5, 0, 0, 0, 0.5), "m": 8, **loss})
    return TrainConfig("finetune", {"name": "tiny"}, spec, epochs=epochs, batch_size=64, lr=0.02,
                       val_size=0.2)


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


def test_run_writes_its_files_and_picks_the_best_epoch(uninterrupted):
    out, summary = uninterrupted
    assert {p.name for p in out.iterdir()} == {"config.json", "log.jsonl", "summary.json", "checkpoint.pt",
                                               "best.pt"}
    log = _log(out)
    assert [row["epoch"] for row in log] == [1, 2, 3, 4]
    for row in log:  # the selection score is the P_K-weighted validation accuracy
        assert row["selection"] == pytest.approx(0.5 * row["val_top1"] + 0.5 * row["val_top5"])
        assert 0 <= row["test_top1"] <= row["test_top5"] <= row["test_top10"] <= 1
    best = max(log, key=lambda row: (row["selection"], -row["epoch"]))
    assert summary["best_epoch"] == best["epoch"]
    assert summary["test"]["top1"] == best["test_top1"] and summary["test"]["top5"] == best["test_top5"]
    assert summary["selection"] == {"top1": 0.5, "top5": 0.5}
    assert summary["val_size"] == 80 and summary["test"]["top5"] > 0.5  # it learned something
    assert json.loads((out / "summary.json").read_text()) == summary
    assert json.loads((out / "config.json").read_text())["config"] == _config().to_dict()
    assert load_checkpoint(out / "best.pt")["epoch"] == summary["best_epoch"]


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(uninterrupted, tmp_path, monkeypatch):
    full_out, full = uninterrupted
    write_jsonl = training.write_jsonl

    def die_after_second_checkpoint(path, rows):
        if len(rows) == 2:  # epoch 2's checkpoint is on disk, its log line is not
            raise _Killed
        write_jsonl(path, rows)

    monkeypatch.setattr(training, "write_jsonl", die_after_second_checkpoint)
    with pytest.raises(_Killed):
        Trainer(_config(), _features(), tmp_path, progress=False).run()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2
    assert len(_log(tmp_path)) == 1 and not (tmp_path / "summary.json").exists()
    monkeypatch.setattr(training, "write_jsonl", write_jsonl)
    check_run_dir(tmp_path, _config(), resume=True)
    resumed = Trainer(_config(), _features(), tmp_path, progress=False).run(resume=True)
    assert _numbers(resumed) == _numbers(full)
    assert _log(tmp_path) == _log(full_out)
    a, b = load_checkpoint(tmp_path / "checkpoint.pt"), load_checkpoint(full_out / "checkpoint.pt")
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])


def test_a_finished_run_extended_with_more_epochs_matches_the_longer_run(uninterrupted, tmp_path):
    full_out, full = uninterrupted
    Trainer(_config(epochs=2), _features(), tmp_path, progress=False).run()
    check_run_dir(tmp_path, _config(epochs=4), resume=True)
    extended = Trainer(_config(epochs=4), _features(), tmp_path, progress=False).run(resume=True)
    assert _numbers(extended) == _numbers(full) and _log(tmp_path) == _log(full_out)


def test_check_run_dir_refuses_to_mix_runs(uninterrupted, tmp_path):
    out, _ = uninterrupted
    check_run_dir(tmp_path / "new", _config(), resume=False)  # new folders are fine, with or without resume
    check_run_dir(tmp_path / "new", _config(), resume=True)
    with pytest.raises(ValueError, match="already holds a run; pass --resume"):
        check_run_dir(out, _config(), resume=False)
    with pytest.raises(ValueError, match=r"different configuration \(loss: .*'m': 8.*'m': 16"):
        check_run_dir(out, _config(m=16), resume=True)
    with pytest.raises(ValueError, match="--epochs 3 is less than the 4 epochs"):
        check_run_dir(out, _config(epochs=3), resume=True)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "summary.json"
    write_json(target, {"old": 1})

    def fail_midway(f):
        f.write(b'{"new": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, fail_midway)
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left


def test_validation_split_is_disjoint_and_seeded():
    splits = _features(n=300)
    train, val = training.validation_split(splits, 0.1, seed=3)
    assert val.shape == (30,) and train.shape == (270,)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(300))  # a partition of train
    assert torch.equal(training.validation_split(splits, 0.1, seed=3)[1], val)
    assert not torch.equal(training.validation_split(splits, 0.1, seed=4)[1], val)
    assert training.validation_split(splits, 25, seed=3)[1].shape == (25,)


@pytest.mark.parametrize(("n", "classes", "expected"), [
    (52_000, 148, 5_200), (1_281_167, 1000, 50_000), (11_000_000, 10_450, 100_000)])
def test_default_validation_size_gives_the_papers_numbers(n, classes, expected):
    labels = torch.zeros(n, dtype=torch.int8)  # only the count matters
    splits = Splits(torch.zeros(1), labels, torch.zeros(1), labels[:1], classes)
    assert training._validation_count(splits, None) == expected


def test_best_epoch_prefers_the_earliest_of_equal_scores():
    history = [{"epoch": 1, "selection": 0.5}, {"epoch": 2, "selection": 0.7}, {"epoch": 3, "selection": 0.7}]
    assert best_epoch(history)["epoch"] == 2


def _images(n=48, test=12, c=6, seed=0) -> Splits:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n + test, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.arange(n + test) % c
    return Splits(x[:n], y[:n], x[n:], y[n:], c)


def test_train_protocol_runs_a_tiny_resnet_with_bf16_autocast(tmp_path):
    spec = LossSpec("neuralsort", (0.5, 0, 0, 0, 0.5), inverse_temperature=0.0625, top1_mode="smce")
    config = TrainConfig("train", {"name": "tiny"}, spec, epochs=1, batch_size=16, lr=1e-3, val_size=0.25,
                         width=2, amp="bf16", augmentation=AUGMENTATIONS["glyphs"])
    summary = Trainer(config, _images(), tmp_path, progress=False).run()
    assert summary["epochs"] == 1 and summary["val_size"] == 12
    assert set(summary["test"]) == {"top1", "top2", "top3", "top4", "top5"}  # k <= C = 6 only
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["model"]["stem.0.weight"].shape == (2, 1, 3, 3)
    assert state["optimizer"]["state"]  # Adam moments are saved


def test_check_fits_names_the_mismatch():
    with pytest.raises(ValueError, match=r"finetune needs float features \[N, D\]"):
        check_fits(_config(), _images())
    with pytest.raises(ValueError, match=r"train needs uint8 images"):
        check_fits(TrainConfig("train", {"name": "tiny"}, LossSpec("softmax"), 1, 8, 1e-3, 0.1), _features())
    with pytest.raises(ValueError, match="K = 5 entries but the data has only 4 classes"):
        check_fits(_config(), _features(c=4))
    with pytest.raises(ValueError, match="val_size 400 gives 400 validation samples out of 400"):
        check_fits(TrainConfig("finetune", {}, LossSpec("softmax"), 1, 8, 1e-3, 400), _features())


def test_config_checks_its_fields():
    with pytest.raises(ValueError, match="protocol must be one of finetune, train"):
        TrainConfig("pretrain", {}, LossSpec("softmax"), 1, 8, 1e-3)
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        TrainConfig("train", {}, LossSpec("softmax"), 1, 8, 0.0)
    with pytest.raises(ValueError, match="val_size must be a fraction"):
        TrainConfig("train", {}, LossSpec("softmax"), 1, 8, 1e-3, val_size=2.5)
    with pytest.raises(ValueError, match="amp must be 'none' or 'bf16'"):
        TrainConfig("train", {}, LossSpec("softmax"), 1, 8, 1e-3, amp="fp16")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kill_9_in_the_middle_of_a_checkpoint_write_loses_no_finished_epoch(uninterrupted, tmp_path):
    full_out, full = uninterrupted
    pid = os.fork()
    if pid == 0:  # child: train, and die by SIGKILL halfway through writing epoch 3's checkpoint
        try:
            torch.set_num_threads(1)
            save = training.save_checkpoint

            def dying_save(path, state):
                if path.name == "checkpoint.pt" and state["epoch"] == 3:
                    write_atomic(path, lambda f: (f.write(b"half a checkpoint"), f.flush(),
                                                  os.kill(os.getpid(), signal.SIGKILL)))
                save(path, state)

            training.save_checkpoint = dying_save
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
