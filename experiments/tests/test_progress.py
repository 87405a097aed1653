"""Progress output: bars on a terminal only, plain lines otherwise."""

from __future__ import annotations

import io

from softtopk_experiments.training.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_plain_lines_and_no_bar():
    log = io.StringIO()
    progress = Progress(True, log)
    assert list(progress.batches(range(3), 3, "epoch 1")) == [0, 1, 2]
    progress.line("epoch 1/2: done")
    assert log.getvalue() == "epoch 1/2: done\n"


def test_a_terminal_gets_a_bar():
    terminal = _Terminal()
    progress = Progress(True, terminal)
    assert list(progress.batches(range(3), 3, "epoch 1")) == [0, 1, 2]
    progress.line("epoch 1/2: done")
    shown = terminal.getvalue()
    assert "\r" in shown and "epoch 1: " in shown and "/3 [" in shown and "epoch 1/2: done\n" in shown


def test_disabled_progress_prints_nothing():
    for stream in (io.StringIO(), _Terminal()):
        progress = Progress(False, stream)
        assert list(progress.batches(range(2), 2, "x")) == [0, 1]
        progress.line("hidden")
        assert stream.getvalue() == ""
