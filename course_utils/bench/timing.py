"""Timing helpers shared by the course's benchmarks (``scripts/bench_*.py``, notebook cells that
time things): one process, warm-up, interleaved repeats, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                        sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Median wall time in seconds of each callable. Each runs ``warmup`` times first; then the
    repeats are interleaved (a, b, c, a, b, c, ...) so that noise from other processes on the
    machine hits every implementation alike. ``sync`` waits for queued device work (e.g.
    ``torch.cuda.synchronize``) before each clock read."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}
