"""Progress on stderr: a bar per epoch on a terminal, else one plain line per epoch; or nothing."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


class Progress:
    """`enabled` False prints nothing; otherwise `lines` go to `stream` (default stderr), and
    `batches` shows a tqdm bar only when `stream` is a terminal, so a redirected log holds plain
    lines and no bar debris."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.enabled, self.stream = enabled, stream or sys.stderr
        self.bars = enabled and self.stream.isatty()

    def batches(self, items: Iterable[T], total: int, desc: str) -> Iterator[T]:
        """`items`, shown as a transient bar on a terminal."""
        if not self.bars:
            return iter(items)
        from tqdm import tqdm  # only on a terminal: saves its import otherwise

        return iter(tqdm(items, total=total, desc=desc, file=self.stream, leave=False, unit="batch"))

    def line(self, text: str) -> None:
        """One line (above the bar on a terminal)."""
        if not self.enabled:
            return
        if self.bars:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)
