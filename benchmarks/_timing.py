"""Median wall times of a callable next to a baseline, for the benchmark scripts. On a shared
machine a time means something only next to a baseline timed in the same run: `paired_ms` alternates
the two calls and reports the ratio to the baseline's median over the same window, taken under the
same load. The baseline is called twice and its second call timed: right after a larger call, its
first runs on cold caches and freshly mapped memory, and took up to 4x longer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def paired_ms(fn: Callable[[], object], base: Callable[[], object], repeats: int = 30,
              warmup: int = 5) -> tuple[float, float]:
    """(median ms of `fn()`, that median over `base()`'s median), from alternating calls."""
    for _ in range(warmup):
        fn()
        base()
    times, base_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        base()
        start = time.perf_counter()
        base()
        base_times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), statistics.median(times) / statistics.median(base_times)
