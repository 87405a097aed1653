"""Median wall times of callables, for the benchmark scripts. On a shared machine a time means
something only next to a baseline timed in the same run: `paired_ms` alternates the two calls and
reports the median ratio of neighbouring calls as well."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(fn: Callable[[], object], repeats: int = 30, warmup: int = 5) -> float:
    """Median milliseconds of `fn()` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def paired_ms(fn: Callable[[], object], base: Callable[[], object], repeats: int = 30,
              warmup: int = 5) -> tuple[float, float]:
    """(median ms of `fn()`, median of fn / base over alternating calls)."""
    for _ in range(warmup):
        fn()
        base()
    times, ratios = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        middle = time.perf_counter()
        base()
        end = time.perf_counter()
        times.append(middle - start)
        ratios.append((middle - start) / (end - middle))
    return 1e3 * statistics.median(times), statistics.median(ratios)
