"""Timing helpers shared by the benchmark modules (benchmarks/run.py puts this folder on sys.path)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["interleaved_medians", "median_seconds"]


def interleaved_medians(
    fn_a: Callable[[], object], fn_b: Callable[[], object], repeats: int = 5, warmup: int = 1
) -> tuple[float, float]:
    """Median seconds of ``fn_a`` and ``fn_b``, run alternately so machine load affects both alike."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta, tb = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        fn_a()
        ta.append(time.perf_counter() - start)
        start = time.perf_counter()
        fn_b()
        tb.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median seconds of ``fn`` (for rows whose reference is a published figure, not a run)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
