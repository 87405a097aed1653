"""Atomic writes of run files, with the user's umask."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from softtopk_experiments.files import load_checkpoint, save_checkpoint, write_atomic, write_json


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


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {})
        save_checkpoint(tmp_path / "b.pt", {"x": torch.zeros(2)})
    finally:
        os.umask(old)
    for name in ("a.json", "b.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode
    assert torch.equal(load_checkpoint(tmp_path / "b.pt")["x"], torch.zeros(2))
