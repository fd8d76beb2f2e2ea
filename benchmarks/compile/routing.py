#!/usr/bin/env python
"""A ranged aot_inductor build as `load_module` runs it (job.route_to_eager=profiles, the
default) vs its compiled package alone vs eager, at several shapes of its range, in ONE process,
interleaved.

    python benchmarks/compile/routing.py [--builders vae_decode] [--repeats 7]
        [--out benchmarks/results] [--stem compile_cpu_routing]

Issue 10 asks that no compiled build be slower than eager at any benchmarked shape. The build
times its ranged package against eager at `job.benchmark_shape`; where the package lost, that
shape runs eager (`fallback_route.eager_at` in the manifest) and every other shape of the range
keeps the compiled package. This shows what that routing gives at the benchmark shape and what
the package gives at shapes the build did not time. Models: peers.CASES (real SD 1.5
architectures, RANDOM weights), build range and benchmark shape as in peers.py.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peers import CASES, positional, rel_error, run_each_builder  # noqa: E402

# shapes timed besides the benchmark shape (model dims), inside peers.CASES' build ranges
OTHER_SHAPES = {
    "vae_decode": [{"batch": 1, "height": 16, "width": 16}, {"batch": 1, "height": 32, "width": 24}],
    "vae_encode": [{"batch": 1, "height": 128, "width": 128}, {"batch": 1, "height": 256, "width": 192}],
    "clip_text": [{"batch": 2, "sequence": 77}],
}


def bench(builder_name: str, repeats: int, cache_dir: Path) -> dict:
    from mlplatform_compile import build, builder_class, load_module
    from mlplatform_compile.timing import time_samples

    full, _tiny, build_kwargs, bench_sizes, _profile = CASES[builder_name]
    common = dict(hf_hub=f"builtin:{full}", random_weights=True, seed=0, device="cpu",
                  build_kwargs=build_kwargs)
    started = time.perf_counter()
    built = build(builder_name, "aot_inductor", cache_dir=cache_dir, benchmark_runs=5,
                  benchmark_shape=bench_sizes, route_to_eager="profiles", **common)
    build_s = round(time.perf_counter() - started, 1)
    route = built.manifest["fallback_route"]
    print(f"[routing] {builder_name}: built in {build_s}s; route {route}", flush=True)
    names = [s.name for s in built.builder.specs()]
    routed = load_module(built.artifact_dir)
    package_only = load_module(built.artifact_dir, routing="compiled")
    eager = builder_class(builder_name)(backend="eager", **common).forward_module()
    runners = {"eager": eager, "build as loaded": positional(routed, names),
               "package alone": positional(package_only, names)}
    shapes = []
    for sizes in [bench_sizes, *OTHER_SHAPES[builder_name]]:
        inputs = built.builder.make_inputs(built.builder.sizes_for(sizes), seed=1234)
        reference = eager(*inputs)
        errors = {label: rel_error(reference, run(*inputs)) for label, run in runners.items()}
        ran = routed.last_route
        load = os.getloadavg()
        samples = time_samples(list(runners.values()), inputs, repeats, pause=0.3)
        medians = {label: statistics.median(s) for label, s in zip(runners, samples, strict=True)}
        rows = [{"runner": label, "ms": round(seconds * 1e3, 2),
                 "speedup_over_eager": round(medians["eager"] / seconds, 3),
                 "max_rel_error": errors[label],
                 "runs_ms": [round(t * 1e3, 1) for t in runs]}
                for (label, seconds), runs in zip(medians.items(), samples, strict=True)]
        shapes.append({"sizes": sizes, "benchmark_shape": sizes == bench_sizes,
                       "build_ran": ran, "rows": rows,
                       "load_avg": [round(x, 2) for x in load]})
        print(f"[routing] {builder_name} {sizes}: " + ", ".join(
            f"{r['runner']} {r['ms']} ms ({r['speedup_over_eager']}x)" for r in rows), flush=True)
    return {"builder": builder_name, "model": full, "build_kwargs": build_kwargs,
            "benchmark_shape": bench_sizes, "build_s": build_s, "fallback_route": route,
            "build_latency": built.manifest.get("latency"), "shapes": shapes}


def markdown(meta: dict, results: list[dict]) -> str:
    lines = ["# A ranged aot_inductor build as routed vs eager on CPU\n",
             f"Machine: {meta['machine']}; torch {meta['torch']}; {meta['date']}. Real SD 1.5 "
             "architectures with RANDOM weights; all runners in one process, interleaved, median "
             f"of {meta['repeats']}. `build as loaded` is `load_module(artifact)` (the build's "
             "routing applied), `package alone` is `load_module(artifact, routing=\"compiled\")`.\n"]
    for r in results:
        lines.append(f"## {r['builder']} ({r['model']}), range {r['build_kwargs']}\n")
        lines.append(f"The build's own timing at {r['benchmark_shape']}: {r['build_latency']}; "
                     f"route: `{r['fallback_route']}` (built in {r['build_s']} s).\n")
        lines.append("| shape | build ran | runner | median ms | runs ms | vs eager |")
        lines.append("| --- | --- | --- | ---: | --- | ---: |")
        for shape in r["shapes"]:
            tag = " (benchmark shape)" if shape["benchmark_shape"] else ""
            for row in shape["rows"]:
                lines.append(f"| {shape['sizes']}{tag} | {shape['build_ran']} | {row['runner']} | "
                             f"{row['ms']} | {min(row['runs_ms'])}-{max(row['runs_ms'])} | "
                             f"{row['speedup_over_eager']}x |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    return run_each_builder(argv, __doc__, ["vae_decode"],
                            "compile_cpu_routing", bench, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
