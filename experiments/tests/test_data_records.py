"""The data set records: how the command line names data, loading, and adding a data set."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest
import torch

from softtopk_experiments.cli import main
from softtopk_experiments.data import records
from softtopk_experiments.data.augmentation import Augmentation
from softtopk_experiments.data.records import BY_NAME, DATASETS, DataSet, data_spec, load_data
from softtopk_experiments.data.splits import DataError, Splits
from softtopk_experiments.settings.options import BY_NAME as OPTIONS
from softtopk_experiments.settings.paper_defaults import PAPER


def test_every_record_names_a_loader_a_paper_setting_and_valid_overrides():
    for dataset in DATASETS:
        module, function = dataset.load_function.split(":")
        assert callable(getattr(importlib.import_module(f"softtopk_experiments.data.{module}"), function))
        assert dataset.paper is None or PAPER[dataset.paper].protocol == dataset.protocol
        assert dataset.given_as in ("name", "path", "folder")
        for key, value in dataset.overrides.items():
            assert OPTIONS[key].problem(value) is None and dataset.note  # a reason for every change


def test_per_data_set_augmentations():
    assert BY_NAME["cifar100"].augmentation == Augmentation(crop_padding=4, hflip=True)
    # a mirrored glyph is another glyph or none
    assert BY_NAME["glyphs"].augmentation == Augmentation(crop_padding=4, hflip=False)
    assert BY_NAME["wordnet"].augmentation == Augmentation()


def test_data_spec():
    assert data_spec("finetune", "wordnet") == {"name": "wordnet"}
    assert data_spec("finetune", "emb.pt") == {"name": "embeddings", "path": str(Path("emb.pt").resolve())}
    assert data_spec("train", "glyphs") == {"name": "glyphs"}
    assert data_spec("train", "cifar100", "c") == {"name": "cifar100", "folder": str(Path("c").resolve())}


@pytest.mark.parametrize(("protocol", "data", "data_dir", "message"), [
    ("train", "mnist", None, "`data` must be glyphs, radicals or cifar100 for train; got 'mnist'"),
    ("train", "cifar100", None, "`data` cifar100 needs `data_dir` PATH"),
    ("train", "glyphs", "x", "`data_dir` is only for cifar100"),
    ("finetune", "emb.pt", "x", "`data_dir` is only for cifar100; give an embedding file as `data` PATH"),
])
def test_data_spec_errors(protocol, data, data_dir, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        data_spec(protocol, data, data_dir)


def test_load_data_errors():
    with pytest.raises(DataError, match="unknown data set 'nope'"):
        load_data({"name": "nope"})
    with pytest.raises(DataError, match="bad option for data set 'embeddings'"):
        load_data({"name": "embeddings", "folder": "x"})


def load_toyset(cache_dir=None, seed=0) -> Splits:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(240) % 6
    x = 3 * torch.randn(6, 5, generator=g)[y] + torch.randn(240, 5, generator=g)
    return Splits(x[:200], y[:200], x[200:], y[200:], 6)


def test_a_new_data_set_is_one_module_and_one_record(monkeypatch, tmp_path, capsys):
    module = types.ModuleType("softtopk_experiments.data.toyset")
    module.load_toyset = load_toyset
    monkeypatch.setitem(sys.modules, "softtopk_experiments.data.toyset", module)
    record = DataSet("toyset", "finetune", "six Gaussian clusters", overrides={"epochs": 2},
                     note="two epochs are plenty")
    monkeypatch.setattr(records, "DATASETS", (*DATASETS, record))
    monkeypatch.setitem(records.BY_NAME, "toyset", record)
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    assert "toyset: six Gaussian clusters." in " ".join(capsys.readouterr().out.split())
    out = tmp_path / "run"
    assert main(["finetune", "--data", "toyset", "--out", str(out), "--no-progress"]) == 0
    assert "| Softmax |" in capsys.readouterr().out
    config = (out / "config.json").read_text()
    assert '"epochs": 2' in config and "data set toyset: two epochs are plenty" in config
