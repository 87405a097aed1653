"""The commands end to end, on a stand-in data set: run folders, resume, seeds, and every bad input
as one line on stderr with exit status 2 and nothing written."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import softtopk
from softtopk_experiments import cli
from softtopk_experiments.cli import main
from softtopk_experiments.data.records import for_protocol
from softtopk_experiments.settings.defaults_table import describe
from softtopk_experiments.settings.options import options_for

RUN_FILES = {"config.json", "log.jsonl", "summary.json", "checkpoint.pt", "best.pt", "results.md",
             "results.csv", "results.json", "curves.png", "bars.png"}


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else None


def test_finetune_writes_a_complete_run_folder(tiny_data, tmp_path, capsys, fails):
    out = tmp_path / "run"
    argv = ["finetune", "--method", "bitonic", "--p-k", ".5,0,0,0,.5", "--top-m", "6", "--epochs", "2",
            "--lr", "0.05", "--batch-size", "50", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| Bitonic DSN | [.5, 0, 0, 0, .5] |" in printed
    assert {p.name for p in out.iterdir()} == RUN_FILES
    for png in ("curves.png", "bars.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads((out / "config.json").read_text())
    settings, sources = stored["config"]["settings"], stored["config"]["sources"]
    assert (settings["m"], settings["batch_size"], settings["val_size"]) == (6, 50, None)  # the 10% rule
    assert (settings["distribution"], settings["inverse_temperature"]) == ("logistic_phi", 1.0)  # the paper's
    assert sources["distribution"] == "paper: ImageNet-1K fine-tuning, bitonic" and sources["lr"] == "given"
    assert stored["runtime"]["argv"] == ["softtopk", *argv] and stored["runtime"]["device"] == "cpu"
    assert stored["runtime"]["softtopk"] == softtopk.__version__
    assert len((out / "log.jsonl").read_text().splitlines()) == 2  # 6 batches an epoch, evaluated at the end
    summary = json.loads((out / "summary.json").read_text())
    row = json.loads((out / "results.json").read_text())[0]
    assert row["top1"] == summary["test"]["top1"] and row["method"] == "Bitonic DSN"
    # a finished run is not overwritten, but can be resumed (nothing left to do) ...
    fails(argv, "already holds a run; pass --resume")
    assert main([*argv, "--resume"]) == 0
    assert "resuming" in capsys.readouterr().err
    # ... or extended, and a different configuration is refused
    longer = [("3" if arg == "2" else arg) for arg in argv]
    assert main([*longer, "--resume"]) == 0
    assert f"resuming {out} after epoch 2 of 3" in capsys.readouterr().err
    assert len((out / "log.jsonl").read_text().splitlines()) == 3
    before = _tree(out), (out / "config.json").read_text()
    fails([*argv, "--resume", "--seed", "1"], "was started with a different configuration (settings.seed: 0")
    fails([*argv, "--resume"], "--epochs 2 is less than the 3 epochs")
    assert (_tree(out), (out / "config.json").read_text()) == before


@pytest.mark.parametrize("patience", ["0", "none"])
def test_patience_flag_and_the_summary_says_why_the_run_stopped(tiny_data, tmp_path, capsys, patience):
    converging, fixed = tmp_path / "converging", tmp_path / "fixed"
    assert main(["finetune", "--epochs", "60", "--lr", "0.05", "--patience", "2", "--out", str(converging),
                 "--no-progress"]) == 0
    summary = json.loads((converging / "summary.json").read_text())
    config = json.loads((converging / "config.json").read_text())["config"]
    assert config["settings"]["patience"] == 2 and config["sources"]["patience"] == "given"
    assert summary["stopped"]["reason"] == "converged" and summary["epochs"] < 60
    assert summary["stopped"]["text"].startswith(f"converged at epoch {summary['epochs']}: its last 2 epochs")
    assert main(["finetune", "--epochs", "3", "--patience", patience, "--out", str(fixed),
                 "--no-progress"]) == 0
    assert json.loads((fixed / "summary.json").read_text())["stopped"] == {
        "reason": "schedule", "epoch": 3, "text": "the fixed schedule of 3 epochs"}


def test_one_plain_line_per_epoch_when_stderr_is_not_a_terminal(tiny_data, tmp_path, capsys):
    assert main(["finetune", "--epochs", "3", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "epoch" in line and "train loss" in line]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "\r" not in err and "batch/s" not in err  # no bar debris


def test_several_seeds_are_reported_as_mean_and_sd(tiny_data, tmp_path, capsys):
    out = tmp_path / "seeds"
    assert main(["finetune", "--seeds", "0,1,2", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"\| Softmax \| \[1, 0, 0, 0, 0\] \| [\d.]+ ± [\d.]+ \([\d.]+–[\d.]+\) \|", printed)
    assert "| 3 |" in printed and "3 runs in" in printed
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert cells == ["00-softmax-1-0-0-0-0-seed0", "01-softmax-1-0-0-0-0-seed1", "02-softmax-1-0-0-0-0-seed2"]
    seeds = [json.loads((out / "cells" / c / "config.json").read_text())["config"]["settings"]["seed"]
             for c in cells]
    assert seeds == [0, 1, 2]
    assert main(["finetune", "--seeds", "0,1,2", "--epochs", "1", "--out", str(out), "--resume",
                 "--no-progress"]) == 0


def test_selection_and_evaluation_cadence(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert main(["finetune", "--epochs", "2", "--batch-size", "30", "--eval-every", "4", "--select", "score",
                 "--out", str(out), "--no-progress"]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [(row["epoch"], row["iteration"]) for row in log] == [(e, i) for e in (1, 2) for i in (4, 8, 9)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["select"] == "score" and list(summary["picked"]) == ["score"]


def test_train_on_tiny_images_with_label_smoothing_and_mixup(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--width", "2", "--epochs", "1", "--batch-size", "32", "--label-smoothing", "0.1",
                 "--mixup", "0.2", "--cutmix", "1", "--out", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["augmentation"] == {"crop_padding": 4, "hflip": False}  # glyphs: never mirrored
    settings = config["settings"]
    assert [settings[k] for k in ("width", "lr", "val_size", "eval_every")] == [2, 1e-3, 0.05, 0]
    assert (settings["label_smoothing"], settings["mixup"], settings["cutmix"]) == (0.1, 0.2, 1.0)
    assert "| Softmax | [1, 0, 0, 0, 0] |" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["finetune", "--method", "quicksort"], "argument --method: invalid choice: 'quicksort'"),
    (["finetune", "--p-k", ".5,0,x"], "argument --p-k: must be comma-separated probabilities"),
    (["finetune", "--p-k", ".5,.6"], "--p-k must sum to 1"),
    (["finetune", "--method", "bitonic"], "--method bitonic needs --p-k"),
    (["finetune", "--p-k", ".5,.5"], "--method softmax is plain cross-entropy and needs p_k = [1, 0, ...]"),
    (["finetune", "--method", "bitonic", "--p-k", "0,1", "--inverse-temperature", "-1"],
     "--inverse-temperature must be finite and > 0, got -1.0"),
    (["finetune", "--method", "bitonic", "--p-k", "0,1", "--top1-mode", "best"],
     "--top1-mode must be one of"),
    (["finetune", "--method", "smooth_topk", "--p-k", ".5,0,0,0,.5"], "--p-k must be one-hot"),
    (["finetune", "--method", "bitonic", "--p-k", "0,1", "--top-m", "2"], "--top-m must be greater than K"),
    (["finetune", "--method", "bitonic", "--p-k", "0,1", "--distribution", "weird"],
     "--distribution must be"),
    (["finetune", "--inverse-temperature", "2"], "--inverse-temperature does not apply to --method softmax"),
    (["finetune", "--method", "smooth_topk", "--p-k", "0,1", "--label-smoothing", ".1"],
     "--label-smoothing does not apply to --method smooth_topk"),
    (["train", "--method", "smooth_topk", "--p-k", "0,1", "--mixup", ".2"],
     "--mixup does not apply to --method smooth_topk (it is a setting of softmax and the relaxations)"),
    (["train", "--method", "smooth_topk", "--p-k", "0,1", "--cutmix", "1"], "--cutmix does not apply to"),
    (["finetune", "--mixup", ".2"],
     "unrecognized arguments: --mixup .2; --mixup is an option of train, not of finetune"),
    (["demo", "--width=4"], "--width is an option of train, not of demo"),
    (["finetune", "--width", "4"], "unrecognized arguments: --width"),
    (["finetune", "--lr", "-1"], "argument --lr: must be > 0, got -1"),
    (["finetune", "--label-smoothing", "1.5"], "--label-smoothing must lie in [0, 1], got 1.5"),
    (["finetune", "--val-size", "0"], "argument --val-size: must be a fraction in (0, 1) or a whole count"),
    (["finetune", "--val-size", "-0.2"], "argument --val-size: must be a fraction in (0, 1)"),
    (["finetune", "--val-size", "1.5"], "argument --val-size: must be a fraction in (0, 1) or a whole count"),
    (["finetune", "--val-size", "abc"], "argument --val-size: must be a number"),
    (["finetune", "--val-size", "1000"], "--val-size 1000 gives 1000 validation samples out of 300"),
    (["finetune", "--seeds", "0,0"], "argument --seed/--seeds: must not repeat a seed"),
    (["finetune", "--method", "bitonic", "--p-k", "0,0,0,0,0,0,0,0,1"],
     "--p-k has K = 9 entries but the data has only 8"),
    (["train", "--data", "mnist"], "--data must be glyphs, radicals or cifar100"),
    (["train", "--data", "cifar100"], "--data cifar100 needs --data-dir"),
    (["finetune", "--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
    (["finetune", "--threads", "0"], "argument --threads: must be a whole number >= 1, got '0'"),
    (["finetune", "--patience", "-1"], "argument --patience: must be >= 0, got -1"),
    (["finetune", "--resume"], "--resume needs --out"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tiny_data, tmp_path, argv, message, fails):
    out = tmp_path / "run"
    fails([*argv, *(["--out", str(out)] if "--resume" not in argv else [])], message)
    assert not out.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", [["finetune"], ["finetune", "--seeds", "0,1"], ["demo"]])
@pytest.mark.parametrize(("make", "resume", "message"), [
    ("nothing", True, "does not exist, so there is no"),
    ("empty", True, "to resume; drop --resume to start one"),
    ("foreign", False, "is a folder with other files (notes.txt) and no softtopk"),
    ("file", False, "is a file; give a folder for the run"),
    ("under a file", False, "cannot be created:"),
])
def test_run_folders_that_are_refused(tiny_data, tmp_path, command, make, resume, message, fails, out_folder):
    out = out_folder(make)
    before = _tree(tmp_path)
    fails([*command, "--epochs", "1", "--out", str(out), *(["--resume"] if resume else [])], message)
    assert _tree(tmp_path) == before


def test_a_data_name_that_is_neither_a_data_set_nor_a_file_lists_the_data_sets(tmp_path, fails):
    *first, last = [d.name for d in for_protocol("finetune") if d.given_as == "name"]
    fails(["finetune", "--data", str(tmp_path / "imagenet"), "--out", str(tmp_path / "run")],
          f"imagenet is neither a data set of finetune ({', '.join(first)} or {last}) nor an existing "
          "embedding file")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux's /proc")
def test_a_run_folder_that_passes_the_checks_but_cannot_be_made_exits_2(tiny_data, fails):
    fails(["finetune", "--epochs", "1", "--out", "/proc/x"], "--out /proc/x cannot be created or written")


def test_a_run_folder_in_use_is_refused_and_a_stale_lock_taken_over(tiny_data, tmp_path, capsys, fails):
    out = tmp_path / "run"
    argv = ["finetune", "--epochs", "1", "--out", str(out), "--no-progress"]
    out.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(f"{live.pid} {socket.gethostname()}\n")
        fails(argv, f"is in use by process {live.pid}")
        assert _tree(out) == [".lock"]
    finally:
        live.kill()
        live.wait()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"taking over the lock of process {live.pid}, which is no longer running" in err
    assert not (out / ".lock").exists()


def _embedding_file(path, splits):
    np.savez(path, train_embeddings=splits.train_x.numpy(), train_labels=splits.train_y.numpy(),
             test_embeddings=splits.test_x.numpy(), test_labels=splits.test_y.numpy())


def test_a_second_process_on_a_running_run_is_refused_and_a_killed_run_resumed(tmp_path, tiny_splits, capsys,
                                                                              fails):
    data, out = tmp_path / "emb.npz", tmp_path / "run"
    _embedding_file(data, tiny_splits({"name": "embeddings"}))
    argv = ["finetune", "--data", str(data), "--epochs", "400", "--batch-size", "10", "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-m", "softtopk", *argv], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists():  # running, with an epoch done
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.1)
        fails([*argv, "--resume"], f"is in use by process {first.pid}")
    finally:
        first.kill()
        first.wait()
    shorter = [("2" if arg == "400" else arg) for arg in argv]
    done = torch.load(out / "checkpoint.pt", weights_only=True)["epoch"]
    shorter[shorter.index("2")] = str(done + 1)
    assert main([*shorter, "--resume", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"taking over the lock of process {first.pid}" in err
    assert f"after epoch {done} of {done + 1}" in err


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
def test_run_files_get_the_users_umask(tiny_data, tmp_path):
    old = os.umask(0o022)
    try:
        assert main(["finetune", "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()}
    assert set(modes) == RUN_FILES and set(modes.values()) == {0o644}


def test_finetune_on_an_embedding_file(tmp_path, capsys, tiny_splits):
    splits = tiny_splits({"name": "embeddings"})
    path = tmp_path / "emb.pt"
    torch.save({"train_embeddings": splits.train_x.half(), "train_labels": splits.train_y,
                "test_embeddings": splits.test_x.half(), "test_labels": splits.test_y}, path)
    out = tmp_path / "run"
    assert main(["finetune", "--data", str(path), "--epochs", "1", "--val-size", "60", "--out", str(out),
                 "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["data"] == {"name": "embeddings", "path": str(path)}
    assert config["sources"]["lr"].startswith("lr rule")  # 300 samples: not the paper's data
    assert json.loads((out / "summary.json").read_text())["val_size"] == 60
    assert "| Softmax |" in capsys.readouterr().out


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(("content", "message"), [
    (None, "is neither a data set of finetune"),
    (b"not an archive", "is not a readable .npz/.pt embedding file"),
    ("exploit", "is not a readable .npz/.pt embedding file (it holds Python objects"),
    ({"embeddings": torch.zeros(3, 2)}, "must hold the arrays train_embeddings"),
    ({"train_embeddings": torch.zeros(3, 2), "train_labels": torch.zeros(3, dtype=torch.long),
      "test_embeddings": torch.zeros(2, 5), "test_labels": torch.zeros(2, dtype=torch.long)}, "dimensions"),
])
@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_missing_or_malformed_data_files_exit_2(tmp_path, capsys, content, message, suffix, fails):
    path, marker = tmp_path / f"emb{suffix}", tmp_path / "executed"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "exploit":
        torch.save({"train_embeddings": _Exploit(marker)}, path)
        if suffix == ".npz":  # read as an archive of arrays, and none of its members is one
            message = "must hold the arrays train_embeddings"
    elif content is not None:
        if suffix == ".pt":
            torch.save(content, path)
        else:
            np.savez(path, **{k: v.numpy() for k, v in content.items()})
    err = fails(["finetune", "--data", str(path), "--out", str(tmp_path / "run")], message)
    assert "weights_only" not in err and "allow_pickle" not in err
    assert not (tmp_path / "run").exists() and not marker.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tiny_data, tmp_path, capsys, fails):
    fails(["finetune", "--device", "cuda", "--out", str(tmp_path / "r")], "no CUDA device is available")


@pytest.mark.parametrize("protocol", ["finetune", "train"])
def test_help_states_every_default_and_the_defaults_table(capsys, protocol):
    with pytest.raises(SystemExit) as exit:
        main([protocol, "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    entries = {}  # each option's help: from its flag at the start of a line to the next one
    for entry in re.split(r"\n(?=  -)", text.split("options:", 1)[1].split("defaults:", 1)[0]):
        if entry.strip():
            entries[entry.split()[0].rstrip(",")] = " ".join(entry.split())
    flags = [cli.flags(o.name)[0] for o in options_for(protocol)] + ["--out", "--resume", "--device",
                                                                     "--threads",
                                                       "--no-progress", "--data"] + (
        ["--data-dir"] if protocol == "train" else [])
    for flag in flags:
        assert "(default: " in entries[flag], entries[flag]
    assert describe(protocol) in text
    if protocol == "finetune":
        assert "epochs 20, batch_size 500, lr 10^-4.5, m 16, top1_mode sm, eval_every 100" in flat
        assert "wordnet: WordNet noun glosses" in flat and "lr rule" in flat
    else:
        assert "epochs 200, batch_size 128, lr 0.001, m none (every class), top1_mode smce" in flat
        assert "glyphs: " in flat and "epochs 20, width 16" in flat and "no flip" in flat


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out == f"softtopk {softtopk.__version__}\n"


def test_without_a_dependency_one_line_names_the_install(monkeypatch, capsys, tmp_path):
    from importlib import metadata

    version, requires = metadata.version, metadata.requires

    def without_tqdm(name):
        if name.lower() == "tqdm":
            raise metadata.PackageNotFoundError(name)
        return version(name)

    def requirements(name):  # as installed (a source tree has no metadata to check against)
        if name == cli.DISTRIBUTION:
            return ["softtopk", "tqdm>=4", "sentence-transformers; extra == 'encoder'"]
        return requires(name)

    monkeypatch.setattr(metadata, "version", without_tqdm)
    monkeypatch.setattr(metadata, "requires", requirements)
    assert main(["finetune", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs tqdm (dependencies of softtopk-experiments)" in err
    assert "pip install tqdm" in err
    assert not (tmp_path / "run").exists()


def test_start_up_imports_nothing_it_does_not_need(tmp_path):
    """Lazy imports: the parser needs neither matplotlib, scikit-learn nor Pillow (torch imports tqdm)."""
    code = ("import sys; from softtopk_experiments import cli; cli.build_parser(); "
            "print(sorted(m for m in ('matplotlib', 'sklearn', 'PIL', 'scipy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_folder_without_cifar100_exits_2(tmp_path, capsys, fails):
    argv = ["train", "--data", "cifar100", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")]
    fails(argv, "CIFAR-100 file")
    assert not (tmp_path / "run").exists()

