"""What the build scripts share: writing the shipped files, each atomically, and the command line of
those that read a folder of Debian packages."""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from softtopk_experiments.files import write_atomic

SHIPPED = Path(__file__).resolve().parent.parent / "src" / "softtopk_experiments" / "data" / "shipped"


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write `files` (name -> content) into `folder`, each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        write_atomic(folder / name, lambda file, content=content: file.write(content))


def main_on_debs(description: str, packages: Iterable[str], write_outputs: Callable[[Path], None],
                 argv: list[str] | None = None) -> None:
    """Run `write_outputs(folder)` on a folder of the packages' .deb files: the one given on the command
    line, or a temporary one that `apt-get download` fills."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("download_dir", nargs="?", type=Path,
                        help="folder holding the packages' .deb files (default: download them)")
    args = parser.parse_args(argv)
    if args.download_dir is not None:
        write_outputs(args.download_dir)
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", *sorted(set(packages))], cwd=tmp, check=True)
        write_outputs(Path(tmp))
