"""What every build script does last: write the shipped files, each atomically."""

from __future__ import annotations

import os
from pathlib import Path


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write `files` (name -> content) into `folder`, each to a temporary file renamed over the target."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(content)
        os.replace(tmp, folder / name)
