"""The run folder: what `out` may be, resuming, and the lock against concurrent runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from softtopk_experiments.files import write_json
from softtopk_experiments.results.run_folder import LOCK, LockError, RunLock, check_out, check_same_run


def test_new_and_empty_folders_start_a_run(tmp_path):
    assert check_out(tmp_path / "new" / "deeper", "run", resume=False) is False
    assert check_out(tmp_path, "run", resume=False) is False  # empty
    (tmp_path / LOCK).write_text("1 elsewhere\n")  # a lock alone is no foreign file
    assert check_out(tmp_path, "sweep", resume=False) is False


def test_a_folder_holding_a_run(tmp_path):
    write_json(tmp_path / "config.json", {})
    with pytest.raises(ValueError, match="already holds a run; pass `resume`"):
        check_out(tmp_path, "run", resume=False)
    assert check_out(tmp_path, "run", resume=True) is True
    with pytest.raises(ValueError, match="holds a run, not a sweep"):
        check_out(tmp_path, "sweep", resume=True)


@pytest.mark.parametrize(("make", "resume", "message"), [
    ("nothing", True, "does not exist, so there is no run to resume; drop `resume`"),
    ("empty", True, "holds no run to resume; drop `resume`"),
    ("foreign", False, "is a folder with other files (notes.txt) and no softtopk run"),
    ("foreign", True, "is a folder with other files (notes.txt)"),
    ("file", False, "is a file; give a folder"),
    ("under a file", False, "cannot be created: "),
])
def test_refused_folders(tmp_path, make, resume, message, out_folder):
    out = out_folder(make)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_out(out, "run", resume)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root may write anywhere")
def test_a_folder_without_write_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ValueError, match="cannot be created: no permission to write"):
        check_out(locked / "run", "run", resume=False)


def test_check_same_run(tmp_path):
    identity = {"protocol": "finetune", "settings": {"lr": 0.1, "seed": 0}}
    stored = {**identity, "settings": {"lr": 0.1, "seed": 0, "epochs": 4}, "sources": {"lr": "given"}}
    write_json(tmp_path / "config.json", {"config": stored})
    check_same_run(tmp_path, identity, epochs=4, checkpoint_epoch=4)
    check_same_run(tmp_path, identity, epochs=9, checkpoint_epoch=None)  # epochs may grow
    with pytest.raises(ValueError, match=r"different configuration \(settings.seed: 0 there, 1 now\)"):
        check_same_run(tmp_path, {**identity, "settings": {"lr": 0.1, "seed": 1}}, 4, None)
    with pytest.raises(ValueError, match="`epochs` 3 is less than the 4 epochs"):
        check_same_run(tmp_path, identity, epochs=3, checkpoint_epoch=4)


def test_the_lock_is_held_for_the_run_and_released(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        assert lock.holder() == (os.getpid(), lock.mine.split()[1])
        with pytest.raises(LockError, match=f"is in use by process {os.getpid()}"):
            RunLock(tmp_path / "run").check()
    assert not (tmp_path / "run" / LOCK).exists()
    assert [p.name for p in (tmp_path / "run").iterdir()] == []


def test_a_live_process_keeps_its_lock_and_a_dead_ones_is_taken_over(tmp_path, capsys):
    import socket

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / LOCK).write_text(f"{live.pid} {socket.gethostname()}\n")
        with pytest.raises(LockError, match=f"in use by process {live.pid}"):
            RunLock(tmp_path).__enter__()
    finally:
        live.kill()
        live.wait()
    with RunLock(tmp_path):  # the process is gone: its lock is stale
        err = capsys.readouterr().err
        assert f"taking over the lock of process {live.pid}, which is no longer running" in err
    assert not (tmp_path / LOCK).exists()
