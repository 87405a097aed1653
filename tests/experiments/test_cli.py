from __future__ import annotations

import json

import pytest
import torch

from softtopk.experiments.cli import main


def test_finetune_writes_a_complete_run_folder(tiny_data, tmp_path, capsys, fails):
    out = tmp_path / "run"
    argv = ["finetune", "--method", "bitonic", "--p-k", ".5,0,0,0,.5", "--top-m", "6", "--epochs", "2",
            "--lr", "0.05", "--batch-size", "50", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| Bitonic DSN | [.5, 0, 0, 0, .5] |" in printed
    names = {p.name for p in out.iterdir()}
    assert names == {"config.json", "log.jsonl", "summary.json", "checkpoint.pt", "best.pt", "results.md",
                     "results.csv", "results.json", "curves.png", "bars.png"}
    for png in ("curves.png", "bars.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["loss"]["m"] == 6 and config["config"]["batch_size"] == 50
    assert config["config"]["val_size"] == 0.1 and config["runtime"]["device"] == "cpu"  # wordnet default
    assert config["runtime"]["argv"] == ["softtopk", *argv]
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
    summary = json.loads((out / "summary.json").read_text())
    row = json.loads((out / "results.json").read_text())[0]
    assert row["top1"] == summary["test"]["top1"] and row["method"] == "Bitonic DSN"
    # a finished run is not overwritten, but can be resumed (nothing left to do) ...
    fails(argv, "already holds a run; pass --resume")
    assert main([*argv, "--resume"]) == 0
    # ... or extended, and a different configuration is refused
    longer = [("3" if arg == "2" else arg) for arg in argv]
    assert main([*longer, "--resume"]) == 0
    assert len((out / "log.jsonl").read_text().splitlines()) == 3
    before = (out / "config.json").read_text()
    fails([*argv, "--resume", "--seed", "1"], "was started with a different configuration (seed: 0")
    assert (out / "config.json").read_text() == before


def test_train_on_tiny_images(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--width", "2", "--epochs", "1", "--batch-size", "32", "--out", str(out),
                 "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["augmentation"] == {"crop_padding": 4, "hflip": False}  # glyphs: never mirrored
    assert config["width"] == 2 and config["lr"] == 1e-3 and config["val_size"] == 0.05
    assert "| Softmax | [1, 0, 0, 0, 0] |" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["finetune", "--method", "quicksort"], "argument --method: invalid choice: 'quicksort'"),
    (["finetune", "--p-k", ".5,0,x"], "P_K must be comma-separated probabilities"),
    (["finetune", "--p-k", ".5,.6"], "P_K must be probabilities >= 0 that sum to 1"),
    (["finetune", "--method", "bitonic"], "--method bitonic needs --p-k"),
    (["finetune", "--p-k", ".5,.5"], "method='softmax' is plain cross-entropy"),
    (["finetune", "--method", "smooth_topk", "--p-k", ".5,0,0,0,.5"], "P_K must be one-hot"),
    (["finetune", "--method", "bitonic", "--p-k", "0,1", "--top-m", "2"], "m must be greater than K"),
    (["finetune", "--method", "bitonic", "--p-k", "0,1", "--distribution", "weird"], "distribution must be"),
    (["finetune", "--width", "4"], "unrecognized arguments: --width"),
    (["finetune", "--lr", "-1"], "lr must be finite and > 0"),
    (["finetune", "--val-size", "1000"], "val_size 1000 gives 1000 validation samples out of 300"),
    (["finetune", "--method", "bitonic", "--p-k", "0,0,0,0,0,0,0,0,1"],
     "K = 9 entries but the data has only 8"),
    (["train", "--data", "mnist"], "--data must be glyphs or cifar100"),
    (["train", "--data", "cifar100"], "--data cifar100 needs --data-dir"),
    (["finetune", "--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
    (["finetune", "--threads", "0"], "argument --threads: must be a whole number >= 1, got '0'"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tiny_data, tmp_path, argv, message, fails):
    out = tmp_path / "run"
    fails([*argv, "--out", str(out)], message)
    assert not out.exists()


def test_finetune_on_an_embedding_file(tmp_path, capsys, tiny_splits):
    splits = tiny_splits({"name": "embeddings"})
    path = tmp_path / "emb.pt"
    torch.save({"train_embeddings": splits.train_x.half(), "train_labels": splits.train_y,
                "test_embeddings": splits.test_x.half(), "test_labels": splits.test_y}, path)
    out = tmp_path / "run"
    assert main(["finetune", "--data", str(path), "--epochs", "1", "--lr", "0.05", "--val-size", "60",
                 "--out", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["data"] == {"name": "embeddings", "path": str(path)} and config["lr"] == 0.05
    assert json.loads((out / "summary.json").read_text())["val_size"] == 60
    assert "| Softmax |" in capsys.readouterr().out


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist"),
    (b"not an archive", "cannot read embedding file"),
    ({"embeddings": torch.zeros(3, 2)}, "must hold the arrays train_embeddings"),
    ({"train_embeddings": torch.zeros(3, 2), "train_labels": torch.zeros(3, dtype=torch.long),
      "test_embeddings": torch.zeros(2, 5), "test_labels": torch.zeros(2, dtype=torch.long)}, "dimensions"),
])
def test_missing_or_malformed_data_files_exit_2(tmp_path, capsys, content, message, fails):
    path = tmp_path / "emb.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    fails(["finetune", "--data", str(path), "--out", str(tmp_path / "run")], message)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tiny_data, tmp_path, capsys, fails):
    fails(["finetune", "--device", "cuda", "--out", str(tmp_path / "r")],
           "no CUDA device is available")


def test_help_states_the_per_data_set_defaults(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["finetune", "--help"])
    assert exit.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "wordnet: epochs 20, batch 500, lr 0.01" in text
    assert "embeddings: epochs 20, batch 500, lr 3.16e-05" in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "glyphs: epochs 20" in text and "no flip" in text
    assert "cifar100: epochs 200, batch 128, lr 0.001" in text


def test_a_folder_without_cifar100_exits_2(tmp_path, capsys, fails):
    argv = ["train", "--data", "cifar100", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")]
    fails(argv, "CIFAR-100 file")
    assert not (tmp_path / "run").exists()
