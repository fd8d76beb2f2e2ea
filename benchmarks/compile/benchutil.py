"""Measurement helpers shared by the compile benchmarks: contention-aware timing on shared CPUs
and per-process peak memory (Linux /proc)."""

from __future__ import annotations

import os
import statistics
import time

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy ticks of the whole machine, ticks used by this process and all its threads)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
        with open("/proc/self/stat") as fh:
            own = fh.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle, int(own[11]) + int(own[12])


def others_cores(before, after, seconds: float) -> float | None:
    """Average number of CPU cores other processes kept busy between two _cpu_ticks() samples."""
    if before is None or after is None or seconds <= 0:
        return None
    other = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, other / TICKS / seconds)


def wait_for_quiet(limit_cores: float = 0.15, window: float = 0.5, max_wait: float = 120.0) -> float:
    """Sleep until other processes use less than `limit_cores` over a window; returns seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait:
        before = _cpu_ticks()
        time.sleep(window)
        load = others_cores(before, _cpu_ticks(), window)
        if load is None or load < limit_cores:
            break
    return time.perf_counter() - start


def timed_runs(fn, repeats: int, *, sync=None, busy_limit: float = 0.3, max_discard: int | None = None,
               max_wait: float = 120.0, event_timer=None) -> dict:
    """Time `repeats` calls of fn() (ms). On CPU, a run during which other processes kept more
    than `busy_limit` cores busy is discarded and repeated after waiting for a quiet machine
    (only runs long enough to measure, >= 50 ms, are checked). Waiting is capped at `max_wait`
    seconds in all; after that contended runs are kept, and `other_load_cores` shows it."""
    max_discard = repeats * 3 if max_discard is None else max_discard
    times: list[float] = []
    loads: list[float] = []
    discarded = 0
    waited = 0.0
    while len(times) < repeats:
        if event_timer is not None:  # CUDA: events, no contention check
            times.append(event_timer(fn))
            continue
        before = _cpu_ticks()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        elapsed = time.perf_counter() - t0
        load = others_cores(before, _cpu_ticks(), elapsed)
        if (load is not None and elapsed >= 0.05 and load > busy_limit and discarded < max_discard
                and waited < max_wait):
            discarded += 1
            waited += wait_for_quiet(max_wait=max_wait - waited)
            continue
        times.append(elapsed * 1e3)
        if load is not None and elapsed >= 0.05:
            loads.append(load)
    return {
        "median_ms": round(statistics.median(times), 3),
        "min_ms": round(min(times), 3),
        "max_ms": round(max(times), 3),
        "times_ms": [round(t, 3) for t in times],
        "discarded_runs": discarded,
        "waited_s": round(waited, 1),
        "other_load_cores": round(statistics.mean(loads), 3) if loads else None,
    }
