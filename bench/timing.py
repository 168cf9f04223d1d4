"""Timing helper shared by the bench scripts."""
from __future__ import annotations

import time
from typing import Callable

import torch


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls after one warm-up (CUDA work is synchronised).

    The minimum is the figure least disturbed by other processes on a shared machine.
    """
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def timings(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, dict[str, float]]:
    """Time several callables side by side: ``repeats`` rounds, each calling every one once (interleaved,
    so a burst of load on a shared machine hits all of them alike), after ``warmup`` untimed rounds.

    Returns per name ``{"median", "min", "max", "repeats"}`` in seconds. Publish ratios of medians
    (:func:`ratio`), not absolute times.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: summary(ts) for name, ts in times.items()}


def summary(ts: list[float]) -> dict[str, float]:
    """Median, min and max of a list of times (seconds)."""
    s = sorted(ts)
    n = len(s)
    median = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
    return {"median": median, "min": s[0], "max": s[-1], "repeats": n}


def ratio(slow: dict[str, float], fast: dict[str, float]) -> dict[str, float]:
    """``slow / fast`` for the medians, with the range from the extreme pairings (min/max, max/min)."""
    return {"median": slow["median"] / fast["median"], "low": slow["min"] / fast["max"],
            "high": slow["max"] / fast["min"]}
