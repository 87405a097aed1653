"""The run folder (`--out`): what may be written where, and a lock against two processes on one run.

A run folder is new, empty, or holds a run (`config.json`) or a sweep (`sweep.json`) of softtopk;
any other folder, a file, or a path that cannot be created is refused before anything is written.
While a command runs, `.lock` in the folder holds its process id and host; a second process on the
same folder is refused while the first is alive, and takes over the lock of a dead one.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from softtopk_experiments.files import read_json
from softtopk_experiments.results.names import CONFIG, LOCK, SWEEP
from softtopk_experiments.settings.run_config import identity_of

MARKERS = {"run": CONFIG, "sweep": SWEEP}
NAMES = {"run": "run", "sweep": "sweep (or a run over several seeds)"}


class LockError(ValueError):
    """The run folder cannot be locked: another live process uses it, or it cannot be created."""


def check_out(out: Path, kind: str, resume: bool) -> bool:
    """Check that `out` can take a `kind` ('run' or 'sweep') folder; returns whether it already
    holds one (to be resumed). Raises ValueError (one line, naming `out` or `resume`)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`out` {out} is a file; give a folder for the run")
    if not out.exists():
        _check_creatable(out)
        if resume:
            raise ValueError(f"`resume`: {out} does not exist, so there is no run to resume; drop `resume` "
                             f"to start one")
        return False
    other = next((k for k, marker in MARKERS.items() if k != kind and (out / marker).exists()), None)
    if other is not None:
        raise ValueError(f"`out` {out} holds a {NAMES[other]}, not a {NAMES[kind]}; choose another `out`")
    if (out / MARKERS[kind]).exists():
        if not resume:
            raise ValueError(f"{out} already holds a {kind}; pass `resume` to continue it or choose another "
                             f"`out`")
        return True
    foreign = sorted(p.name for p in out.iterdir() if not p.name.startswith(LOCK))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ValueError(f"`out` {out} is a folder with other files ({shown}) and no softtopk {kind}; "
                         f"choose a new or empty folder")
    if resume:
        raise ValueError(f"`resume`: {out} holds no {kind} to resume; drop `resume` to start one")
    return False


def _check_creatable(out: Path) -> None:
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"`out` {out} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"`out` {out} cannot be created: no permission to write in {parent}")


def read_stored(out: Path, kind: str) -> dict:
    """The stored `config.json` or `sweep.json` of `out`; ValueError if it is unreadable."""
    path = Path(out) / MARKERS[kind]
    try:
        return read_json(path)
    except (ValueError, OSError) as error:
        raise ValueError(f"`resume`: {path} is unreadable ({error})") from None


def check_same_run(folder: Path, identity: dict, epochs: int, checkpoint_epoch: int | None) -> None:
    """Raise ValueError unless the run stored in `folder` has the `identity` of the run to resume
    (`RunConfig.identity()`) and has not finished more than `epochs` (`checkpoint_epoch`: the epoch
    of its checkpoint, None without one)."""
    stored = identity_of(read_stored(folder, "run").get("config", {}))
    if stored != identity:
        diffs = [f"{key}: {_get(stored, key)!r} there, {_get(identity, key)!r} now"
                 for key in _keys(stored, identity) if _get(stored, key) != _get(identity, key)]
        raise ValueError(f"`resume`: {folder} was started with a different configuration "
                         f"({'; '.join(diffs)})")
    if checkpoint_epoch is not None and checkpoint_epoch > epochs:
        raise ValueError(f"`epochs` {epochs} is less than the {checkpoint_epoch} epochs {folder} has "
                         f"finished")


def _keys(a: dict, b: dict) -> list[str]:
    """Dotted keys of the leaves of two nested dicts (settings.lr, data.name, ...)."""
    def leaves(d: dict, prefix: str = "") -> set[str]:
        return set().union(*[leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
                             for k, v in d.items()]) if d else set()
    return sorted(leaves(a) | leaves(b))


def _get(d: dict, dotted: str) -> object:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunLock:
    """`with RunLock(out):` holds `out/.lock` for this process (creating `out`). Raises LockError if
    a live process holds it; a dead process's lock is taken over with a message on stderr."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK
        self.mine = f"{os.getpid()} {socket.gethostname()}\n"

    def holder(self) -> tuple[int, str] | None:
        """(pid, host) of the process that holds the lock, or None."""
        try:
            pid, host = self.path.read_text().split()
            return int(pid), host
        except (OSError, ValueError):
            return None

    def check(self) -> None:
        """Raise LockError if a live process holds the lock (without taking it)."""
        holder = self.holder()
        if holder is not None and self._live(holder):
            pid, host = holder
            raise LockError(f"{self.path.parent} is in use by process {pid} on {host} (lock file "
                            f"{self.path}); wait until it ends")

    def _live(self, holder: tuple[int, str]) -> bool:
        pid, host = holder
        return host != socket.gethostname() or _alive(pid)  # another host's process: assume alive

    def __enter__(self) -> RunLock:
        draft = self.path.with_name(f"{LOCK}-{os.getpid()}")  # complete before it becomes the lock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            draft.write_text(self.mine)
        except OSError as error:  # e.g. under /proc, which no permission check foresees
            raise LockError(f"`out` {self.path.parent} cannot be created or written: "
                            f"{error.strerror or error}") from None
        try:
            while True:
                try:
                    os.link(draft, self.path)  # atomic: fails if the lock exists
                    return self
                except FileExistsError:
                    stale = self.holder()
                    self.check()
                    if self.holder() == stale:  # not taken over by another process meanwhile
                        print(f"softtopk: taking over the lock of process {stale[0] if stale else '?'}, "
                              f"which is no longer running ({self.path})", file=sys.stderr)
                        self.path.unlink(missing_ok=True)
        finally:
            draft.unlink(missing_ok=True)

    def __exit__(self, *exc: object) -> None:
        try:
            if self.path.read_text() == self.mine:
                self.path.unlink()
        except OSError:
            pass
