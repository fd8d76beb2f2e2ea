#!/usr/bin/env python
"""inductor (freezing on, as built now) vs aot_inductor vs eager, in ONE process, interleaved.

    python benchmarks/compile/inductor_freezing.py [--builders clip_text,vae_encode,vae_decode]
        [--repeats 7] [--out benchmarks/results] [--stem compile_cpu_inductor_freezing]

Until 2026-12-06 the inductor backend passed freezing only as torch.compile(options=...), which
compiled aten convolutions and addmm as if freezing were off; it now compiles and runs under
torch._inductor.config.patch. This re-measures issue 10's "inductor with freezing no slower than
aot_inductor by more than 10%" on the peers benchmark's models and shapes (peers.CASES: real SD
1.5 architectures, RANDOM weights, ranged builds, timed at the benchmark shape), and reports
which kernels each inductor build runs (prepacked oneDNN / MKL or plain aten).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peers import CASES, count_flops, positional, rel_error, run_each_builder  # noqa: E402

PREPACKED = ("mkldnn::_convolution_pointwise", "mkldnn::_linear_pointwise", "mkl::_mkl_linear")
PLAIN = ("aten::convolution", "aten::addmm")


def kernels(runner, inputs) -> dict[str, int]:
    """Calls of prepacked vs plain convolution / linear kernels in one call of `runner`."""
    import torch

    with torch.profiler.profile() as profiled:
        runner(*inputs)
    counts = {event.key: event.count for event in profiled.key_averages()}
    return {name: counts[name] for name in PREPACKED + PLAIN if name in counts}


def bench(builder_name: str, repeats: int, cache_dir: Path) -> dict:
    from mlplatform_compile import build, builder_class
    from mlplatform_compile.timing import time_samples

    full, _tiny, build_kwargs, sizes, _profile = CASES[builder_name]
    common = dict(hf_hub=f"builtin:{full}", random_weights=True, seed=0, device="cpu",
                  build_kwargs=build_kwargs, cache_dir=cache_dir, benchmark_runs=0)
    builds, build_s = {}, {}
    for backend in ("inductor", "aot_inductor"):
        started = time.perf_counter()
        builds[backend] = build(builder_name, backend, backend_options={"freezing": True},
                                **common)
        build_s[backend] = round(time.perf_counter() - started, 1)
        print(f"[freezing] {builder_name}: {backend} built in {build_s[backend]}s", flush=True)
    eager_builder = builder_class(builder_name)(
        backend="eager", **{k: v for k, v in common.items()
                            if k not in ("cache_dir", "benchmark_runs")})
    eager = eager_builder.forward_module()
    inputs = eager_builder.make_inputs(eager_builder.sizes_for(sizes), seed=1234)
    names = [s.name for s in eager_builder.specs()]
    runners = {"eager": eager,
               **{backend: positional(result.module, names) for backend, result in builds.items()}}
    reference = eager(*inputs)
    errors = {label: rel_error(reference, runner(*inputs)) for label, runner in runners.items()}
    used = kernels(runners["inductor"], inputs)
    load = os.getloadavg()
    samples = time_samples(list(runners.values()), inputs, repeats, pause=0.3)
    flops = count_flops(eager, inputs)
    medians = {label: statistics.median(runs) for label, runs in zip(runners, samples, strict=True)}
    rows = [{"runner": label, "ms": round(seconds * 1e3, 2),
             "speedup_over_eager": round(medians["eager"] / seconds, 3),
             "gflops": round(flops / seconds / 1e9, 1),
             "max_rel_error": errors[label],
             "runs_ms": [round(t * 1e3, 1) for t in runs]}
            for (label, seconds), runs in zip(medians.items(), samples, strict=True)]
    ratio = medians["inductor"] / medians["aot_inductor"]
    return {"builder": builder_name, "model": full, "build_kwargs": build_kwargs, "sizes": sizes,
            "shape": {n: list(t.shape) for n, t in zip(names, inputs, strict=True)},
            "gflop": round(flops / 1e9, 2), "rows": rows, "build_s": build_s,
            "inductor_kernels": used,
            "inductor_over_aot_inductor": round(ratio, 3),
            "target_met": ratio <= 1.10,
            "load_avg_before": [round(x, 2) for x in load],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()]}


def markdown(meta: dict, results: list[dict]) -> str:
    lines = ["# inductor with freezing (applied) vs aot_inductor on CPU\n",
             f"Machine: {meta['machine']}; torch {meta['torch']}; {meta['date']}. Real SD 1.5 "
             "architectures with RANDOM weights, ranged builds, timed at the benchmark shape, "
             f"all runners in one process, interleaved, median of {meta['repeats']}.\n"]
    for r in results:
        lines.append(f"## {r['builder']} ({r['model']}), input {r['shape']}, {r['gflop']} GFLOP\n")
        lines.append(f"inductor ran {r['inductor_kernels']}; built in {r['build_s']} s; load "
                     f"average {r['load_avg_before']} -> {r['load_avg_after']}.\n")
        lines.append("| runner | median ms | runs ms | vs eager | GFLOP/s | max rel. error |")
        lines.append("| --- | ---: | --- | ---: | ---: | ---: |")
        for row in r["rows"]:
            lines.append(f"| {row['runner']} | {row['ms']} | {min(row['runs_ms'])}-"
                         f"{max(row['runs_ms'])} | {row['speedup_over_eager']}x | {row['gflops']} "
                         f"| {row['max_rel_error']:.1e} |")
        lines.append(f"\ninductor / aot_inductor: **{r['inductor_over_aot_inductor']}x** "
                     f"(target <= 1.10x: {'met' if r['target_met'] else 'NOT met'})\n")
    return "\n".join(lines)


def main(argv=None) -> int:
    return run_each_builder(argv, __doc__, ["clip_text", "vae_encode", "vae_decode"],
                            "compile_cpu_inductor_freezing", bench, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
