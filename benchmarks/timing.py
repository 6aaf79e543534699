"""The timing rule every benchmark uses: median of ``reps`` repetitions after ``warmup`` calls.

Timings are wall-clock (``time.perf_counter``); on CUDA the device is synchronised before each
clock read. Comparisons are made as ratios of timings taken in the same process run, so that
machine load common to both sides cancels.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], *, reps: int = 5, warmup: int = 1, number: int = 1) -> float:
    """Median seconds of one call of ``fn`` over ``reps`` timed repetitions of ``number`` calls each."""
    if reps < 1 or warmup < 0 or number < 1:
        raise ValueError(f"reps >= 1, warmup >= 0 and number >= 1 are needed; got {reps}, {warmup}, {number}")
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        _sync()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times)


def interleaved_times(fns: dict[str, Callable[[], object]], *, reps: int = 5, warmup: int = 1,
                      number: int = 1) -> dict[str, float]:
    """Median seconds per call of each of ``fns``, timed in alternation (A B A B ...).

    Alternating the repetitions spreads slow phases of a shared machine over every side of a
    comparison, which is what makes the ratio of two medians meaningful here.
    """
    if reps < 1 or warmup < 0 or number < 1:
        raise ValueError(f"reps >= 1, warmup >= 0 and number >= 1 are needed; got {reps}, {warmup}, {number}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            _sync()
            times[k].append((time.perf_counter() - t0) / number)
    return {k: statistics.median(v) for k, v in times.items()}
