"""Eager-vs-compiled latency, measured side by side in one process."""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import Build


def time_pair(eager, compiled, inputs, runs: int) -> tuple[float, float]:
    """Median seconds of eager and compiled (see time_interleaved)."""
    eager_s, compiled_s = time_interleaved((eager, compiled), inputs, runs)
    return eager_s, compiled_s


def time_interleaved(fns, inputs, runs: int, pause: float = 0.0) -> list[float]:
    """Median seconds of each callable, warmed up and interleaved so none gets another's warm
    caches or thread-pool start-up. `pause` seconds between calls let thread pools that spin
    after a call (OpenMP, ONNX Runtime, TBB) go idle before the next runtime is timed."""
    return [statistics.median(bucket) for bucket in time_samples(fns, inputs, runs, pause)]


def time_samples(fns, inputs, runs: int, pause: float = 0.0, warmup: int = 2) -> list[list[float]]:
    """Every timed run's seconds per callable (see time_interleaved), in run order."""
    import torch

    sync = (
        torch.cuda.synchronize
        if inputs and getattr(inputs[0], "is_cuda", False)
        else (lambda: None)
    )
    fns = list(fns)
    times: list[list[float]] = [[] for _ in fns]
    with torch.no_grad():
        for _ in range(warmup):
            for fn in fns:
                fn(*inputs)
        sync()
        for _ in range(runs):
            for fn, bucket in zip(fns, times, strict=True):
                if pause:
                    time.sleep(pause)
                start = time.perf_counter()
                fn(*inputs)
                sync()
                bucket.append(time.perf_counter() - start)
    return times


def measure_latency(builder: Build, eager_module, runner, bench_sizes) -> dict[str, Any]:
    """Eager vs compiled at the benchmark shape (job.benchmark_shape), interleaved (time_pair)."""
    bench_inputs = builder.make_inputs(bench_sizes, seed=7)
    eager_s, compiled_s = time_pair(eager_module, runner, bench_inputs, builder.benchmark_runs)
    return {
        "sizes": bench_sizes,
        "runs": builder.benchmark_runs,
        "eager_ms": round(eager_s * 1e3, 3),
        "compiled_ms": round(compiled_s * 1e3, 3),
        "speedup": round(eager_s / compiled_s, 3) if compiled_s > 0 else None,
    }



def measure_profile(builder: Build, eager_module, runner, fallback, sizes) -> dict[str, Any]:
    """Eager vs the profile's package vs the ranged fallback at the profile's benchmark shape."""
    inputs = builder.make_inputs(sizes, seed=7)
    eager_s, profile_s, fallback_s = time_interleaved(
        (eager_module, runner, fallback), inputs, builder.benchmark_runs
    )
    return {
        "sizes": dict(sizes),
        "runs": builder.benchmark_runs,
        "eager_ms": round(eager_s * 1e3, 3),
        "compiled_ms": round(profile_s * 1e3, 3),
        "fallback_ms": round(fallback_s * 1e3, 3),
        "speedup": round(eager_s / profile_s, 3) if profile_s > 0 else None,
    }
