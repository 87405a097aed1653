"""Files of a run directory, each written atomically: to a temporary file in the same folder, then
`os.replace`d over the target, so a reader (or a run killed mid-write) never sees half a file. The
files get the permissions of any new file under the user's umask (not the temporary file's 0600)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

import torch


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write(file)` on a temporary file next to `path`, flush it to disk, then rename it to `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_mode() -> int:
    """The mode of a new file under the process's umask: 0o666 without the umask's bits."""
    umask = os.umask(0o22)
    os.umask(umask)
    return 0o666 & ~umask


def remove_partial_files(folder: Path) -> None:
    """Delete the temporary files that a process killed while writing left in `folder`."""
    for partial in Path(folder).glob(".*.tmp"):
        partial.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))


def write_json(path: Path, obj: object) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def save_checkpoint(path: Path, state: dict) -> None:
    write_atomic(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, mmap: bool = False) -> dict:
    """A checkpoint's state; with `mmap` its tensors stay on disk until used (to read the epoch)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
