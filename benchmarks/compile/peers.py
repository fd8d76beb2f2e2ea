#!/usr/bin/env python
"""CPU peers side by side, in ONE process: eager, inductor (freezing), aot_inductor (ranged and
with a matching shape profile), onnxruntime, openvino (each ranged and profiled) and backend=auto,
timed interleaved (medians) on the same inputs, with effective GFLOP/s, the share of the
machine's fp32 peak, peak RSS of the loaded artifact vs eager, and the issue-10 targets.

    python benchmarks/compile/peers.py [--quick] [--builders vae_decode,vae_encode,clip_text]
        [--repeats 5] [--out benchmarks/results] [--stem compile_cpu_issue10]

One backend=auto build per model (candidates aot_inductor, onnxruntime, openvino, with
`keep_candidates=true` and one profile at the benchmark shape) yields every compiled package:
the race's losers stay in the artifact, so each is loaded from disk as a user would load it
(`mlplatform_compile.backends.auto.load_candidate`). inductor is built on its own (it is not an
auto candidate by default). Models are the real SD 1.5 architectures with RANDOM weights.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PEERS = ("onnxruntime", "openvino")
CANDIDATES = ["aot_inductor", "onnxruntime", "openvino"]
# builder -> (full config, tiny config, build range, benchmark sizes, profile at those sizes)
# Reduced CPU shape (2 shared cores): VAE at 192x128 pixels (latent 24x16), CLIP at 77 tokens.
CASES = {
    "vae_decode": ("sd15_vae", "tiny_vae",
                   {"batch_size": [1, 2], "resolution": [128, 256]},
                   {"batch": 1, "height": 24, "width": 16},
                   {"batch_size": 1, "height": 192, "width": 128}),
    "vae_encode": ("sd15_vae", "tiny_vae",
                   {"batch_size": [1, 2], "resolution": [128, 256]},
                   {"batch": 1, "height": 192, "width": 128},
                   {"batch_size": 1, "height": 192, "width": 128}),
    "clip_text": ("sd15_clip_text", "tiny_clip_text",
                  {"batch_size": [1, 2], "sequence_length": 77},
                  {"batch": 1, "sequence": 77},
                  {"batch_size": 1}),
}
QUICK_SIZES = {  # the tiny VAE has a scale factor of 2, not 8
    "vae_decode": ({"batch_size": [1, 2], "resolution": [32, 64]},
                   {"batch": 1, "height": 24, "width": 16},
                   {"batch_size": 1, "height": 48, "width": 32}),
    "vae_encode": ({"batch_size": [1, 2], "resolution": [32, 64]},
                   {"batch": 1, "height": 48, "width": 32},
                   {"batch_size": 1, "height": 48, "width": 32}),
}


def machine_peak() -> dict:
    """fp32 peak from cores x clock x FLOP/cycle (2 FMA pipes x lanes x 2), with the inputs."""
    import torch

    flags = ""
    clock_mhz = None
    model = platform.processor()
    family = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "flags" and not flags:
                flags = value
            elif key == "cpu MHz" and clock_mhz is None:
                clock_mhz = float(value)
            elif key == "model name":
                model = value
            elif key == "cpu family" and family is None:
                family = int(value)
    except OSError:
        pass
    width = 512 if "avx512f" in flags.split() else 256 if "avx2" in flags.split() else 128
    lanes = width // 32
    fma_pipes = 2
    cores = torch.get_num_threads()
    ghz = (clock_mhz or 0) / 1000
    flop_per_cycle = fma_pipes * lanes * 2
    return {
        "cpu": model, "cpu_family": family, "cores_used": cores, "clock_ghz": round(ghz, 3),
        "vector_bits": width, "fp32_lanes": lanes, "fma_pipes": fma_pipes,
        "flop_per_cycle_per_core": flop_per_cycle,
        "peak_gflops": round(cores * ghz * flop_per_cycle, 1),
        "note": ("peak = cores x clock x (FMA pipes x fp32 lanes x 2); clock is /proc/cpuinfo's "
                 "(nominal, a VM may boost or throttle); the cores are shared with other jobs"),
    }


def count_flops(module, inputs) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return float(counter.get_total_flops())


def positional(compiled, names):
    """A CompiledModule (named in, named out) as a positional runner (tuple out)."""
    def run(*inputs):
        out = compiled(dict(zip(names, inputs, strict=True)))
        return tuple(out.values())
    return run


def rel_error(reference, outputs) -> float:
    worst = 0.0
    for ref, out in zip(reference, outputs, strict=True):
        ref, out = ref.double(), out.double().to(ref.device)
        scale = ref.abs().max().item()
        worst = max(worst, (out - ref).abs().max().item() / (scale or 1.0))
    return worst


def bench_model(builder_name: str, args, cache_dir: Path, peak: dict) -> dict:
    import torch
    from mlplatform_compile import build, builder_class
    from mlplatform_compile.backends.auto import load_candidate
    from mlplatform_compile.timing import time_samples

    full, tiny, build_kwargs, sizes, profile = CASES[builder_name]
    model = tiny if args.quick else full
    if args.quick and builder_name in QUICK_SIZES:
        build_kwargs, sizes, profile = QUICK_SIZES[builder_name]
    # every build times (and auto races) at the benchmark shape; the build's own timing (3 runs)
    # decides whether the profile runs its own package, the ranged fallback or eager
    common = dict(hf_hub=f"builtin:{model}", random_weights=True, seed=0, device="cpu",
                  cache_dir=cache_dir, benchmark_runs=3, benchmark_shape=sizes)
    log = lambda msg: print(f"[peers] {builder_name}: {msg}", flush=True)  # noqa: E731

    started = time.perf_counter()
    auto = build(builder_name, "auto", build_kwargs={**build_kwargs, "profiles": [profile]},
                 backend_options={"candidates": CANDIDATES, "keep_candidates": True,
                                  "race_runs": args.race_runs},
                 route_to_eager="profiles", **common)
    auto_build_s = time.perf_counter() - started
    log(f"auto built in {auto_build_s:.0f}s: {auto.artifact_dir.name}")
    started = time.perf_counter()
    inductor = build(builder_name, "inductor", build_kwargs=build_kwargs,
                     backend_options={"freezing": True}, **common)
    inductor_build_s = time.perf_counter() - started
    log(f"inductor built in {inductor_build_s:.0f}s")

    eager_builder = builder_class(builder_name)(backend="eager", build_kwargs=build_kwargs,
                                                **{k: v for k, v in common.items()
                                                   if k not in ("cache_dir", "benchmark_runs",
                                                                "benchmark_shape")})
    eager = eager_builder.forward_module()
    inputs = eager_builder.make_inputs(eager_builder.sizes_for(sizes), seed=1234)
    names = [s.name for s in eager_builder.specs()]
    flops = count_flops(eager, inputs)
    module = auto.module
    profile_name = module.profile_for(sizes)
    assert profile_name != "fallback", (profile_name, sizes)
    fallback = "fallback"

    runners = {"eager": eager, "inductor (freezing, ranged)": positional(inductor.module, names),
               "auto (profile)": positional(module, names),
               "auto (ranged)": module.package(fallback)}
    for candidate in CANDIDATES:
        for package, label in ((fallback, "ranged"), (profile_name, "profile")):
            try:
                runners[f"{candidate} ({label})"] = load_candidate(module, candidate, package)
            except Exception as exc:  # a candidate that lost parity or could not build
                log(f"{candidate} {label}: not available ({type(exc).__name__}: {exc})")
    with torch.no_grad():
        reference = eager(*inputs)
        errors = {label: rel_error(reference, runner(*inputs)) for label, runner in runners.items()}
    log(f"timing {len(runners)} runners, {args.repeats} interleaved runs each")
    labels = list(runners)
    load_before = os.getloadavg()
    samples = time_samples([runners[label] for label in labels], inputs, args.repeats,
                           pause=args.pause)
    medians = [statistics.median(runs) for runs in samples]
    load_after = os.getloadavg()
    eager_s = medians[labels.index("eager")]
    rows = []
    for label, seconds in zip(labels, medians, strict=True):
        gflops = flops / seconds / 1e9
        rows.append({
            "builder": builder_name, "model": model, "runner": label,
            "backend": label.split(" ")[0], "ms": round(seconds * 1e3, 2),
            "speedup": round(eager_s / seconds, 3),
            "gflops": round(gflops, 1),
            "peak_share": round(gflops / peak["peak_gflops"], 3) if peak["peak_gflops"] else None,
            "max_rel_error": errors[label],
            "runs_ms": [round(t * 1e3, 1) for t in samples[labels.index(label)]],
        })
    memory = measure_memory(module.artifact_dir, profile_name, sizes, args)
    auto_manifest = auto.manifest
    return {
        "builder": builder_name, "model": model, "random_weights": True,
        "build_kwargs": build_kwargs, "profile": profile, "profile_name": profile_name,
        "sizes": sizes, "shape": {n: list(t.shape) for n, t in zip(names, inputs, strict=True)},
        "gflop": round(flops / 1e9, 2), "repeats": args.repeats, "rows": rows,
        "auto_winner": {"fallback": auto_manifest["backend_extra"]["auto"]["winner"],
                        profile_name: auto_manifest["profiles"][0]["backend_extra"]["auto"]["winner"]},
        "auto_profile_route": auto_manifest["profiles"][0]["route"],
        "auto_race_sizes": {"fallback": auto_manifest["backend_extra"]["auto"]["sizes"],
                            profile_name: auto_manifest["profiles"][0]["backend_extra"]["auto"]["sizes"]},
        "auto_race": {"fallback": auto_manifest["backend_extra"]["auto"]["race"],
                      profile_name: auto_manifest["profiles"][0]["backend_extra"]["auto"]["race"]},
        "build_s": {"auto": round(auto_build_s, 1), "inductor": round(inductor_build_s, 1)},
        "artifact": str(auto.artifact_dir), "memory": memory,
        # the cores are shared: 1-, 5- and 15-minute load averages when the timing began and ended
        "load_avg": {"before": [round(x, 2) for x in load_before],
                     "after": [round(x, 2) for x in load_after]},
    }


def measure_memory(artifact_dir, profile: str, sizes, args) -> dict:
    """Peak RSS at inference in fresh processes: eager, the auto artifact as users load it, and
    each kept candidate's profile package alone."""
    from memory import measure

    out = {"auto": measure(artifact_dir, sizes, runs=2)}
    if not args.skip_candidate_memory:
        for candidate in CANDIDATES:
            out[candidate] = measure(artifact_dir, sizes, runs=2,
                                     candidate=candidate, package=profile)
    return out


def remeasure_memory(path: Path, args) -> int:
    """Memory again for every model of a results JSON (its artifacts must still exist), e.g.
    after a loader fix; the speed figures are kept, the targets recomputed."""
    data = json.loads(path.read_text())
    for result in data["results"]:
        print(f"[peers] {result['builder']}: memory again", flush=True)
        result["memory"] = measure_memory(result["artifact"], result["profile_name"],
                                          result["sizes"], args)
        result["memory_remeasured"] = _dt.datetime.now(_dt.timezone.utc).isoformat(
            timespec="seconds")
    data["targets"] = targets(data["results"])
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(write_markdown(path.with_suffix(".md"), data["meta"], data["results"], data["targets"]))
    return 0


def targets(results: list[dict]) -> list[dict]:
    """Issue 10, item 3, per model: met or not, with the figures."""
    out = []
    for result in results:
        by = {row["runner"]: row for row in result["rows"]}
        eager = by["eager"]["ms"]
        peers = {k: v["ms"] for k, v in by.items() if v["backend"] in PEERS}
        best_peer = min(peers, key=peers.get) if peers else None
        def check(name, ok, detail, builder=result["builder"]):
            out.append({"builder": builder, "target": name, "met": bool(ok), "detail": detail})
        slower = [k for k, v in by.items() if k != "eager" and v["ms"] > eager]
        check("no compiled build slower than eager", not slower,
              "slower: " + (", ".join(f"{k} {by[k]['ms']} ms" for k in slower) or "none")
              + f" (eager {eager} ms)")
        if best_peer:
            auto = by["auto (profile)"]["ms"]
            detail = (f"auto {auto} ms vs {best_peer} {peers[best_peer]} ms "
                      f"({peers[best_peer] / auto:.3f}x)")
            same = _auto_package(result)
            if same in by and same != best_peer:
                detail += (f"; auto runs the {same} package, timed {by[same]['ms']} ms as "
                           f"`{same}` in the same run ({by[same]['ms'] / auto:.3f}x of auto: "
                           "identical packages, so that gap is the timing noise)")
            check("auto at least as fast as the fastest CPU peer", auto <= peers[best_peer],
                  detail)
            aot = by.get("aot_inductor (profile)", {}).get("ms")
            if aot:
                check("aot_inductor with a matching profile within 10% of the fastest peer",
                      aot <= 1.10 * peers[best_peer],
                      f"aot_inductor (profile) {aot} ms vs {best_peer} {peers[best_peer]} ms "
                      f"({aot / peers[best_peer]:.3f}x)")
        aot_ranged = by.get("aot_inductor (ranged)", {}).get("ms")
        ind = by["inductor (freezing, ranged)"]["ms"]
        if aot_ranged:
            check("inductor (freezing) no slower than aot_inductor by more than 10%",
                  ind <= 1.10 * aot_ranged,
                  f"inductor {ind} ms vs aot_inductor (ranged) {aot_ranged} ms "
                  f"({ind / aot_ranged:.3f}x)")
        memory = result["memory"].get("auto", {})
        ratio = memory.get("peak_ratio")
        check("item 4: peak RSS of the loaded module <= 1.25x eager",
              ratio is not None and ratio <= 1.25,
              f"auto artifact {memory.get('compiled', {}).get('peak_mb')} MB vs eager "
              f"{memory.get('eager', {}).get('peak_mb')} MB ({ratio}x)")
        for candidate in CANDIDATES:
            cand = result["memory"].get(candidate)
            if cand:
                r = cand.get("peak_ratio")
                check(f"item 4: {candidate} (profile package alone) <= 1.25x eager",
                      r is not None and r <= 1.25,
                      f"{cand.get('compiled', {}).get('peak_mb')} MB vs eager "
                      f"{cand.get('eager', {}).get('peak_mb')} MB ({r}x)")
    return out


def _auto_package(result: dict) -> str | None:
    """The runner label of the package the auto artifact runs at the profile's shape."""
    route = (result.get("auto_profile_route") or {}).get("use")
    winners = result["auto_winner"]
    if route == "fallback":
        return f"{winners['fallback']} (ranged)"
    if route == "compiled":
        return f"{winners[result['profile_name']]} (profile)"
    return None


def write_markdown(path: Path, meta: dict, results: list[dict], checks: list[dict]) -> str:
    peak = meta["peak"]
    lines = [
        "# Compile peers on CPU (issue 10)", "",
        f"Machine: {meta['machine']}; torch {meta['torch']}; {meta['date']}. Models: real SD 1.5 "
        "architectures with RANDOM weights. All runners in one process, timed interleaved "
        f"(median of {results[0]['repeats'] if results else '?'} runs each).", "",
        f"fp32 peak: {peak['cores_used']} cores x {peak['clock_ghz']} GHz x "
        f"{peak['flop_per_cycle_per_core']} FLOP/cycle ({peak['fma_pipes']} FMA pipes x "
        f"{peak['fp32_lanes']} fp32 lanes ({peak['vector_bits']}-bit) x 2) = "
        f"**{peak['peak_gflops']} GFLOP/s**. {peak['note']}.", "",
    ]
    for result in results:
        lines += [
            f"## {result['builder']} ({result['model']}), input {result['shape']}, "
            f"{result['gflop']} GFLOP per call", "",
            f"Build range {result['build_kwargs']}, profile {result['profile']} "
            f"(`{result['profile_name']}`). auto picked {result['auto_winner']}, racing at "
            f"{result.get('auto_race_sizes')}. Load average (1, 5, 15 min) when timing began "
            f"{result['load_avg']['before']}, ended {result['load_avg']['after']} (2 shared "
            f"cores). The auto artifact routes the profile's shape to: "
            f"**{result['auto_profile_route']['use']}** ({result['auto_profile_route']['reason']}); "
            "`auto (profile)` is the artifact as `load_module` runs it at that shape.", "",
            "| runner | median ms | runs min-max ms | vs eager | GFLOP/s | share of peak | "
            "max rel. error |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in sorted(result["rows"], key=lambda r: r["ms"]):
            spread = f"{min(row['runs_ms']):.4g}-{max(row['runs_ms']):.4g}"
            lines.append(f"| {row['runner']} | {row['ms']:.1f} | {spread} | {row['speedup']:.2f}x | "
                         f"{row['gflops']:.1f} | {100 * (row['peak_share'] or 0):.0f}% | "
                         f"{row['max_rel_error']:.1e} |")
        again = (f" Measured again at {result['memory_remeasured']} with the loader as it is "
                 "now (`--remeasure-memory`)." if result.get("memory_remeasured") else "")
        lines += ["", "Peak RSS at inference, MB above the process after imports (fresh process "
                  "each; HWM reset after load and again after a first call, which loads the lazy package "
                  "of that shape)." + again, "",
                  "| loaded | eager | compiled | ratio | compiled load peak | compiled first-call "
                  "peak |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, mem in result["memory"].items():
            eager, comp = mem.get("eager", {}), mem.get("compiled", {})
            lines.append(f"| {name} | {eager.get('peak_mb')} | {comp.get('peak_mb')} | "
                         f"{mem.get('peak_ratio')} | {comp.get('load_peak_mb')} | "
                         f"{comp.get('first_call_peak_mb')} |")
        lines.append("")
    lines += ["## Targets (issue 10, items 3 and 4)", "", "| model | target | met | figures |",
              "| --- | --- | --- | --- |"]
    for check in checks:
        lines.append(f"| {check['builder']} | {check['target']} | "
                     f"{'yes' if check['met'] else '**no**'} | {check['detail']} |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def write_chart(path: Path, results: list[dict], meta: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[peers] matplotlib missing: no chart", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        rows = sorted(result["rows"], key=lambda r: r["ms"])
        ax.barh([r["runner"] for r in rows], [r["gflops"] for r in rows], color="tab:blue")
        ax.axvline(meta["peak"]["peak_gflops"], color="tab:red", linestyle="--", label="fp32 peak")
        ax.set_title(f"{result['builder']} {result['shape']}", fontsize=9)
        ax.set_xlabel("effective GFLOP/s")
        ax.invert_yaxis()
        ax.legend(fontsize=8)
    fig.suptitle(f"{meta['machine']}, torch {meta['torch']} (RANDOM weights)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run_each_builder(argv, doc: str, builders: list[str], stem: str, bench, markdown) -> int:
    """main() of a one-process benchmark over peers.CASES models: `bench(builder, repeats,
    cache_dir)` per builder, the results JSON and `markdown(meta, results)` rewritten after each
    (a cut-off run keeps what it measured), then printed."""
    import tempfile

    import torch

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--builders", type=lambda s: [b for b in s.split(",") if b],
                        default=builders)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(HERE.parent / "results"))
    parser.add_argument("--stem", default=stem)
    args = parser.parse_args(argv)

    torch.set_grad_enabled(False)
    peak = machine_peak()
    meta = {"machine": f"{peak['cores_used']}-vCPU {platform.machine()} ({peak['cpu']}, "
                       f"{peak['vector_bits']}-bit vectors, {peak['clock_ghz']} GHz nominal)",
            "torch": torch.__version__, "repeats": args.repeats, "peak": peak,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    cache_dir = Path(tempfile.mkdtemp(prefix=f"{stem}_cache_"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, text = [], ""
    for builder_name in args.builders:
        results.append(bench(builder_name, args.repeats, cache_dir))
        (out / f"{args.stem}.json").write_text(
            json.dumps({"meta": meta, "results": results}, indent=1, default=str) + "\n")
        text = markdown(meta, results)
        (out / f"{args.stem}.md").write_text(text + "\n")
    print(text)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builders", type=lambda s: [b for b in s.split(",") if b],
                        default=list(CASES))
    parser.add_argument("--quick", action="store_true", help="tiny configs (smoke test)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--race-runs", type=int, default=5, help="timed rounds of auto's race")
    parser.add_argument("--out", default=str(HERE.parent / "results"))
    parser.add_argument("--stem", default=None)
    parser.add_argument("--cache-dir", default=None, help="default: a fresh temporary folder")
    parser.add_argument("--skip-candidate-memory", action="store_true")
    parser.add_argument("--pause", type=float, default=0.3,
                        help="seconds between timed calls, so spinning thread pools go idle")
    parser.add_argument("--remeasure-memory", metavar="RESULTS_JSON",
                        help="only measure memory again for the artifacts of a results file")
    args = parser.parse_args(argv)
    if args.remeasure_memory:
        return remeasure_memory(Path(args.remeasure_memory), args)

    import tempfile

    import torch

    torch.set_grad_enabled(False)
    peak = machine_peak()
    print("[peers] fp32 peak inputs: " + json.dumps(peak), flush=True)
    meta = {
        "machine": f"{peak['cores_used']}-vCPU {platform.machine()} ({peak['cpu']}, family "
                   f"{peak['cpu_family']}, {peak['vector_bits']}-bit vectors), "
                   f"{os.cpu_count()} CPUs visible",
        "torch": torch.__version__, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "peak": peak, "quick": args.quick,
    }
    cache_dir = Path(args.cache_dir or tempfile.mkdtemp(prefix="peers_cache_"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.stem or ("compile_cpu_issue10_quick" if args.quick else "compile_cpu_issue10")
    results = []
    started = time.perf_counter()
    for builder_name in args.builders:
        results.append(bench_model(builder_name, args, cache_dir, peak))
        checks = targets(results)
        meta["total_wall_s"] = round(time.perf_counter() - started, 1)
        (out / f"{stem}.json").write_text(json.dumps(
            {"meta": meta, "results": results, "targets": checks}, indent=1, default=str) + "\n")
        text = write_markdown(out / f"{stem}.md", meta, results, checks)
    write_chart(out / f"{stem}.png", results, meta)
    print(text)
    print(f"[peers] wrote {out / stem}.json/.md/.png in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
