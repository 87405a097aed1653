from __future__ import annotations

import pytest
import torch

from softtopk_experiments import cli
from softtopk_experiments.data.splits import Splits


def _tiny(spec: dict) -> Splits:
    """Stands in for every loader: Gaussian clusters as features, or random uint8 images."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(360) % 8
    if spec["name"] in ("glyphs", "radicals", "cifar100"):
        x = torch.randint(0, 256, (360, 1, 8, 8), generator=g, dtype=torch.uint8)
    else:
        x = 2 * torch.randn(8, 6, generator=g)[y] + torch.randn(360, 6, generator=g)
    return Splits(x[:300], y[:300], x[300:], y[300:], 8)


@pytest.fixture
def tiny_splits():
    """The stand-in loader itself: `tiny_splits({"name": ...}) -> Splits`."""
    return _tiny


@pytest.fixture
def tiny_data(monkeypatch):
    monkeypatch.setattr(cli, "load_data", _tiny)


@pytest.fixture
def fails(capsys):
    """`fails(argv, pattern)`: the command exits with status 2 and one line on stderr matching `pattern`."""

    def check(argv, pattern):
        try:
            code = cli.main(argv)
        except SystemExit as exit:  # argparse's own errors
            code = exit.code
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert pattern in err, err
        return err

    return check


@pytest.fixture
def out_folder(tmp_path):
    """`out_folder(kind)`: a path for --out that is 'nothing' (does not exist), an 'empty' folder, a
    'foreign' folder (with the user's notes.txt), a 'file', or 'under a file' (cannot be created)."""

    def make(kind):
        out = tmp_path / "out"
        if kind in ("empty", "foreign"):
            out.mkdir()
            if kind == "foreign":
                (out / "notes.txt").write_text("my notes")
        elif kind == "file":
            out.write_text("a file")
        elif kind == "under a file":
            (tmp_path / "file").write_text("a file")
            out = tmp_path / "file" / "out"
        return out

    return make
