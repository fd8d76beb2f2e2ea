"""Eager-vs-compiled latency, measured side by side in one process."""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import Build


def time_pair(eager, compiled, inputs, runs: int) -> tuple[float, float]:
    """Median seconds of eager and compiled, warmed up and interleaved so neither gets the
    other's warm caches or thread-pool start-up."""
    import torch

    sync = (
        torch.cuda.synchronize
        if inputs and getattr(inputs[0], "is_cuda", False)
        else (lambda: None)
    )
    times: tuple[list[float], list[float]] = ([], [])
    with torch.no_grad():
        for fn in (eager, compiled, eager, compiled):
            fn(*inputs)
        sync()
        for _ in range(runs):
            for fn, bucket in zip((eager, compiled), times, strict=True):
                start = time.perf_counter()
                fn(*inputs)
                sync()
                bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def measure_latency(builder: Build, eager_module, runner, shape_sets) -> dict[str, Any]:
    """Eager vs compiled at the largest shape, interleaved (see time_pair)."""
    bench_sizes = next(s for s in shape_sets if s.label == "max").sizes
    bench_inputs = builder.make_inputs(bench_sizes, seed=7)
    eager_s, compiled_s = time_pair(eager_module, runner, bench_inputs, builder.benchmark_runs)
    return {
        "sizes": bench_sizes,
        "runs": builder.benchmark_runs,
        "eager_ms": round(eager_s * 1e3, 3),
        "compiled_ms": round(compiled_s * 1e3, 3),
        "speedup": round(eager_s / compiled_s, 3) if compiled_s > 0 else None,
    }

