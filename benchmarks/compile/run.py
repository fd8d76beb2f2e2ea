#!/usr/bin/env python
"""Compile benchmarks: eager vs inductor vs aot_inductor (vs aitemplate) side by side.

    python benchmarks/compile/run.py --device cpu|cuda [--builders vae_decode,clip_text]
        [--backends eager,inductor,aot_inductor,aitemplate] [--shapes small,typical]
        [--repeats N] [--warmup N] [--out benchmarks/results] [--baseline FILE] [--quick]

For every (builder, shape) the eager backend runs first and is the reference: every other backend
runs on the same inputs (saved by the eager run) and is checked against its outputs. Each
(builder, shape, backend) runs in its own fresh subprocess, so peak memory and compile time belong
to that backend alone. Results: `<out>/compile_<device>[_quick].json` (flat records), `.md`
(table) and `.png` (chart), plus per-run logs under `<out>/logs/`. With `--baseline`, medians are
compared with a saved JSON and the exit status is 1 when any regress (see compare.py).

Models are the real SD 1.5 architectures (shipped configs) with RANDOM weights; every record says
so (`random_weights: true`). See benchmarks/compile/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

BENCHMARK = "compile"
ALL_BACKENDS = ("eager", "inductor", "aot_inductor", "onnxruntime", "openvino", "tensorrt",
                "aitemplate")
# what runs without --backends: on CPU the in-process peer comparison is peers.py; on CUDA every
# GPU backend, TensorRT as the peer (the GPU CI job requires them not to be skipped)
DEFAULT_BACKENDS = {
    "cpu": ("eager", "inductor", "aot_inductor", "aitemplate"),
    "cuda": ("eager", "inductor", "aot_inductor", "tensorrt", "onnxruntime", "aitemplate"),
}
RESULT_TAG = "BENCH_RESULT "

# ---------------------------------------------------------------------------------------------
# What is benchmarked. `sizes` are the builder's named dimensions (latent units for the VAE
# decoder and the UNet, pixels for the VAE encoder, tokens for text). `build_kwargs` are as
# narrow as the builder allows around those sizes: the builders take one `resolution` for both
# sides, so a non-square shape is built with height and width dynamic over [short, long] side.
# ---------------------------------------------------------------------------------------------

MODELS = {  # builder -> (full config, tiny config used by --quick)
    "vae_decode": ("sd15_vae", "tiny_vae"),
    "vae_encode": ("sd15_vae", "tiny_vae"),
    "unet": ("sd15_unet", "tiny_unet"),
    "clip_text": ("sd15_clip_text", "tiny_clip_text"),
    "t5_encoder": (None, "tiny_t5"),
    "esrgan": (None, "tiny_esrgan"),
}


def _img(batch, h, w, scale):
    """sizes + build_kwargs for an image-like input of h x w pixels (scale: pixels per unit)."""
    res = h if h == w else [min(h, w), max(h, w)]
    return {"sizes": {"batch": batch, "height": h // scale, "width": w // scale},
            "build_kwargs": {"batch_size": batch, "resolution": res}}


def _text(batch, tokens):
    return {"sizes": {"batch": batch, "sequence": tokens},
            "build_kwargs": {"batch_size": batch, "sequence_length": tokens}}


# builder -> shape name -> device -> spec; pixel sizes are height x width
SHAPES = {
    "vae_decode": {
        "small": {"cpu": _img(1, 256, 192, 8), "cuda": _img(1, 256, 256, 8)},
        "typical": {"cpu": _img(1, 512, 512, 8), "cuda": _img(1, 512, 512, 8)},
    },
    "vae_encode": {
        "small": {"cpu": _img(1, 256, 192, 1), "cuda": _img(1, 256, 256, 1)},
        "typical": {"cpu": _img(1, 512, 512, 1), "cuda": _img(1, 512, 512, 1)},
    },
    "unet": {
        "small": {"cpu": _img(1, 256, 192, 8), "cuda": _img(2, 256, 256, 8)},
        "typical": {"cpu": _img(2, 512, 512, 8), "cuda": _img(2, 512, 512, 8)},
    },
    "clip_text": {
        "small": {"cpu": _text(1, 77), "cuda": _text(1, 77)},
        "typical": {"cpu": _text(2, 77), "cuda": _text(2, 77)},
    },
}
for _spec in (SHAPES["unet"]["small"], SHAPES["unet"]["typical"]):
    for _d in _spec.values():
        _d["sizes"]["sequence"] = 77
        _d["build_kwargs"]["sequence_length"] = 77

QUICK_SHAPES = {  # tiny configs: latent scale factor 2 for tiny_vae, UNet sides multiples of 2
    "vae_decode": {"tiny": _img(1, 32, 24, 2)},
    "vae_encode": {"tiny": _img(1, 32, 24, 1)},
    "unet": {"tiny": {"sizes": {"batch": 1, "height": 16, "width": 12, "sequence": 8},
                      "build_kwargs": {"batch_size": 1, "resolution": [96, 128],
                                       "sequence_length": 8, "vae_scale_factor": 8}}},
    "clip_text": {"tiny": _text(1, 16)},
    "t5_encoder": {"tiny": _text(1, 16)},
    "esrgan": {"tiny": {"sizes": {"batch": 1, "height": 24, "width": 32},
                        "build_kwargs": {"batch_size": 1, "resolution": [24, 32]}}},
}

# CPU default: the SD 1.5 VAE decoder, encoder and CLIP text encoder. The UNet (860M parameters) is
# opt-in on 2-core CPUs: compiling it takes long (see README).
DEFAULT_BUILDERS = {
    "cpu": ["vae_decode", "vae_encode", "clip_text"],
    "cuda": ["vae_decode", "vae_encode", "unet", "clip_text"],
}
QUICK_BUILDERS = ["vae_decode"]

# backend options the benchmark passes (None: the backend's own defaults). Recorded per record.
BACKEND_OPTIONS: dict[str, dict] = {}


# ---------------------------------------------------------------------------------------------
# memory helpers (child side)
# ---------------------------------------------------------------------------------------------

def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    if kb is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return kb / 1024


def hwm_mb() -> float:
    """Peak RSS (high-water mark) of this process since start or the last reset_hwm()."""
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return kb / 1024


def reset_hwm() -> bool:
    """Reset the peak-RSS counter (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def release_freed_memory() -> None:
    """Return freed heap pages to the OS so RSS reflects live memory (glibc malloc_trim)."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cpus)"


# ---------------------------------------------------------------------------------------------
# child: one (builder, shape, backend)
# ---------------------------------------------------------------------------------------------

def run_child(job: dict) -> dict:
    import mlplatform_compile
    import torch

    from mlplatform.api import DeviceError, MLPlatformError

    for library in ("diffusers", "transformers", "spandrel"):  # imported lazily by the builders:
        try:  # import them now, so that the memory baseline below includes them
            __import__(library)
        except ImportError:
            pass
    base_rss = rss_mb()  # interpreter + torch + libraries, nothing built yet
    record = {k: job[k] for k in ("builder", "model", "backend", "shape_name", "dtype", "device")}
    record.update(status="ok", reason=None)
    device = job["device"]
    cuda = device == "cuda"
    # inference: grad off for the build too. (Inductor's `freezing` only takes effect when the
    # compilation runs with grad disabled; see README "AOTInductor options".)
    torch.set_grad_enabled(False)
    options = job.get("backend_options")
    started = time.perf_counter()
    try:
        result = mlplatform_compile.build(
            job["builder"], job["backend"], hf_hub=f"builtin:{job['model']}", random_weights=True,
            seed=0, build_kwargs=job["build_kwargs"], dtype=job["dtype"], device=device,
            backend_options=options, cache_dir=job["cache_dir"], force=job["force"],
            verify=False, benchmark_runs=0,
        )
    except DeviceError as exc:  # the backend cannot run on this machine: skipped, with the reason
        record.update(status="skipped", reason=str(exc))
        return record
    except MLPlatformError as exc:
        record.update(status="error", reason=f"{type(exc).__name__}: {exc}")
        return record
    build_s = time.perf_counter() - started
    compile_peak = hwm_mb()
    timings = result.manifest.get("build_seconds", {})
    compile_s = next((v for k, v in timings.items() if k.startswith("compile")), None)
    backend_info = result.manifest.get("backend", {})
    record.update(
        backend_options=backend_info.get("options", options or {}),
        random_weights=bool(result.random_weights),
        cached=bool(result.cached),
        artifact=str(result.artifact_dir),
        compile_s=round(compile_s, 2) if compile_s is not None and not result.cached else None,
        build_s=round(build_s, 2),
    )

    # the same inputs for every backend: the eager run writes them, the others read them
    inputs_path = Path(job["inputs_path"])
    if job["backend"] == "eager" or not inputs_path.exists():
        inputs = result.example_inputs(job["sizes"], seed=1234)
        if job["backend"] == "eager":
            torch.save({k: v.cpu() for k, v in inputs.items()}, inputs_path)
    else:
        inputs = {k: v.to(device) for k, v in torch.load(inputs_path, weights_only=True).items()}
    record["shape"] = " ".join(f"{k}={'x'.join(map(str, v.shape))}" for k, v in inputs.items())
    record["sizes"] = job["sizes"]

    module = result.module
    # drop what the timed module does not need (the builder's eager copy of the weights; the
    # compiled module keeps its own reference when it needs one, e.g. torch.compile)
    result.eager = None
    result.builder._eager = None
    del result
    release_freed_memory()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        ready_mem = torch.cuda.memory_allocated() / 2**20
    hwm_reset = reset_hwm()
    ready_rss = rss_mb()

    from benchutil import timed_runs

    holder = {}

    def call():
        holder["outputs"] = module(inputs)

    event_timer = None
    if cuda:
        def event_timer(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)

    for _ in range(job["warmup"]):
        call()
    sync()
    stats = timed_runs(call, job["repeats"], sync=sync, event_timer=event_timer,
                       busy_limit=job.get("busy_limit", 0.3), max_wait=job.get("max_wait", 120.0))
    sync()
    outputs = holder["outputs"]

    if cuda:
        record.update(
            peak_mem_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1),
            resident_mem_mb=round(ready_mem, 1),
            memory_method="torch.cuda.max_memory_allocated during warmup+timed runs (includes weights)",
        )
    else:
        peak = hwm_mb() if hwm_reset else float("nan")
        record.update(
            peak_mem_mb=round(peak - base_rss, 1),
            resident_mem_mb=round(ready_rss - base_rss, 1),
            compile_peak_mem_mb=round(compile_peak - base_rss, 1),
            memory_method=("peak RSS (VmHWM, reset via /proc/self/clear_refs) during warmup+timed "
                           "runs minus RSS after imports, in a fresh process per backend"),
        )
    record.update(
        **stats,
        repeats=job["repeats"],
        warmup=job["warmup"],
        threads=torch.get_num_threads(),
    )

    outputs = {k: v.detach().cpu() for k, v in outputs.items()}
    ref_path = Path(job["reference_path"])
    if job["backend"] == "eager":
        torch.save(outputs, ref_path)
        record.update(max_abs_error=0.0, max_rel_error=0.0)
    elif ref_path.exists():
        reference = torch.load(ref_path, weights_only=True)
        worst_abs = worst_rel = 0.0
        for name, ref in reference.items():
            out = outputs[name].double()
            ref = ref.double()
            if out.shape != ref.shape or not bool(out.isfinite().all()):
                worst_abs = worst_rel = float("inf")
                continue
            diff = (out - ref).abs().max().item()
            scale = ref.abs().max().item()
            worst_abs = max(worst_abs, diff)
            worst_rel = max(worst_rel, diff / scale if scale > 0 else diff)
        record.update(max_abs_error=worst_abs, max_rel_error=worst_rel)
    return record


# ---------------------------------------------------------------------------------------------
# parent: plan, run children, write results
# ---------------------------------------------------------------------------------------------

def plan(args) -> list[dict]:
    jobs = []
    table = QUICK_SHAPES if args.quick else SHAPES
    builders = args.builders or (QUICK_BUILDERS if args.quick else DEFAULT_BUILDERS[args.device])
    backends = list(args.backends or DEFAULT_BACKENDS[args.device])
    if "eager" not in backends:
        backends.insert(0, "eager")  # the reference every speedup and error is measured against
    backends.sort(key=lambda b: b != "eager")
    for builder in builders:
        if builder not in MODELS:
            sys.exit(f"unknown builder {builder!r}; known: {', '.join(MODELS)}")
        model = MODELS[builder][1 if args.quick else 0]
        if model is None or builder not in table:
            print(f"[bench] {builder}: no full-size config shipped; run it with --quick", file=sys.stderr)
            continue
        shapes = list(table[builder]) if args.quick else args.shapes
        for shape_name in shapes:
            spec = table[builder].get(shape_name)
            if spec is None:
                sys.exit(f"unknown shape {shape_name!r} for {builder}; known: {', '.join(table[builder])}")
            if not args.quick:
                spec = spec[args.device]
            for backend in backends:
                jobs.append({
                    "builder": builder, "model": model, "backend": backend, "shape_name": shape_name,
                    "sizes": spec["sizes"], "build_kwargs": spec["build_kwargs"],
                    "dtype": args.dtype, "device": args.device,
                    "backend_options": args.backend_options.get(backend, BACKEND_OPTIONS.get(backend)),
                    "repeats": args.repeats, "warmup": args.warmup, "force": args.cache_dir is None,
                    "busy_limit": args.busy_limit, "max_wait": args.max_wait,
                })
    return jobs


def run_job(job: dict, args, workdir: Path, logdir: Path) -> dict:
    key = f"{job['builder']}.{job['shape_name']}"
    job = dict(job,
               inputs_path=str(workdir / f"{key}.inputs.pt"),
               reference_path=str(workdir / f"{key}.eager_outputs.pt"),
               cache_dir=str(args.cache_dir or workdir / f"cache.{key}.{job['backend']}"))
    env = dict(os.environ)
    # inductor's cache: fresh per run (cold compiles) unless --cache-dir is reused. Set it here:
    # once torch has fallen back to its default (/tmp/torchinductor_$USER), later settings are
    # ignored and compiles would silently be warm from earlier runs.
    env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(job["cache_dir"]) / "_compiler_cache" / "inductor")
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_path = logdir / f"{key}.{job['backend']}.log"
    started = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)],
                stdout=subprocess.PIPE, stderr=log, text=True, env=env, timeout=args.child_timeout,
            )
            stdout, rc = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as exc:
            stdout, rc = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""), None
        log.write(stdout)
    line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith(RESULT_TAG)), None)
    if line is not None:
        record = json.loads(line[len(RESULT_TAG):])
    else:
        tail = log_path.read_text()[-1500:].strip().splitlines()
        reason = (f"timed out after {args.child_timeout}s" if rc is None
                  else f"exit status {rc}: " + " | ".join(tail[-4:]))
        record = {k: job[k] for k in ("builder", "model", "backend", "shape_name", "dtype", "device")}
        record.update(status="error", reason=reason)
    record["wall_s"] = round(time.perf_counter() - started, 1)
    record["log"] = str(log_path)
    return record


def finish_records(records: list[dict], args, meta: dict) -> None:
    eager = {(r["builder"], r["shape_name"]): r for r in records
             if r["backend"] == "eager" and r.get("status") == "ok"}
    for r in records:
        r.setdefault("benchmark", BENCHMARK)
        ref = eager.get((r["builder"], r["shape_name"]))
        if r.get("status") == "ok" and ref and r.get("median_ms"):
            r["speedup_vs_eager"] = round(ref["median_ms"] / r["median_ms"], 3)
        else:
            r.setdefault("speedup_vs_eager", None)
        from mlplatform_compile import tolerance_for  # the tolerance a build must meet

        tol = tolerance_for(r.get("dtype") or "float32")
        r["tolerance"] = tol
        rel = r.get("max_rel_error")
        r["parity_ok"] = None if rel is None else bool(rel <= tol)
        if ref and r.get("status") == "ok":
            r.setdefault("shape", ref.get("shape"))
        for k, v in meta.items():
            r.setdefault(k, v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--builders", type=lambda s: [b for b in s.split(",") if b])
    ap.add_argument("--backends", type=lambda s: [b for b in s.split(",") if b])
    ap.add_argument("--shapes", type=lambda s: [b for b in s.split(",") if b], default=None,
                    help="small,typical (default: small on cpu, small,typical on cuda)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dtype", default=None, help="default float32 on cpu, float16 on cuda")
    ap.add_argument("--out", default=str(HERE.parent / "results"))
    ap.add_argument("--tag", default=None, help="suffix for the output file names")
    ap.add_argument("--baseline", default=None, help="saved JSON to compare against")
    ap.add_argument("--threshold", type=float, default=0.10,
                    help="a median slower than the baseline by more than this fraction regresses")
    ap.add_argument("--quick", action="store_true", help="tiny configs only (smoke test)")
    ap.add_argument("--cache-dir", default=None,
                    help="reuse compiled artifacts/inductor cache here (default: fresh, cold compiles)")
    ap.add_argument("--backend-option", action="append", default=[], metavar="BACKEND.KEY=JSON",
                    help="e.g. aot_inductor.freezing=false (repeatable)")
    ap.add_argument("--busy-limit", type=float, default=None,
                    help="CPU: redo a timed run during which other processes kept more than this many "
                         "cores busy, after waiting for a quiet machine (default 0.3; off with --quick)")
    ap.add_argument("--max-wait", type=float, default=120.0,
                    help="longest wait (s) for a quiet machine before a contended run is redone")
    ap.add_argument("--child-timeout", type=int, default=1800)
    ap.add_argument("--require-backends", type=lambda s: [b for b in s.split(",") if b],
                    default=[], help="exit 1 when one of these backends was skipped (GPU CI)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        job = json.loads(args.child)
        record = run_child(job)
        print(RESULT_TAG + json.dumps(record), flush=True)
        return 0

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA (torch.cuda.is_available() is False); nothing was run")
        return 0
    args.dtype = args.dtype or ("float16" if args.device == "cuda" else "float32")
    args.repeats = args.repeats or (3 if args.quick else (5 if args.device == "cpu" else 50))
    if args.busy_limit is None:
        args.busy_limit = float("inf") if args.quick else 0.3
    args.shapes = args.shapes or (["small"] if args.device == "cpu" else ["small", "typical"])
    args.backend_options = {}
    for item in args.backend_option:
        key, _, value = item.partition("=")
        backend, _, option = key.partition(".")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        args.backend_options.setdefault(backend, dict(BACKEND_OPTIONS.get(backend) or {}))[option] = parsed
    if args.cache_dir:
        args.cache_dir = str(Path(args.cache_dir).resolve())

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"compile_{args.device}" + ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    logdir = out / "logs" / stem
    logdir.mkdir(parents=True, exist_ok=True)
    meta = {
        "benchmark": BENCHMARK,
        "device_name": device_name(args.device),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": bool(args.quick),
    }
    try:
        import mlplatform_compile

        meta["mlplatform_compile_version"] = mlplatform_compile.__version__
    except ImportError as exc:
        print(f"error: the compile plugin is not importable ({exc}); "
              "pip install -e plugins/compile", file=sys.stderr)
        return 2

    jobs = plan(args)
    print(f"[bench] {len(jobs)} runs on {meta['device_name']} (torch {meta['torch_version']}); "
          f"models have RANDOM weights; logs in {logdir}", file=sys.stderr)
    records = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlp-bench-") as tmp:
        for index, job in enumerate(jobs, 1):
            print(f"[bench] ({index}/{len(jobs)}) {job['builder']} {job['shape_name']} "
                  f"{job['backend']} ...", file=sys.stderr, flush=True)
            record = run_job(job, args, Path(tmp), logdir)
            records.append(record)
            summary = (f"median {record['median_ms']:.1f} ms" if record.get("median_ms") is not None
                       else record.get("status"))
            if record.get("reason"):
                summary += f" ({record['reason'][:200]})"
            print(f"[bench]     {summary}; {record['wall_s']:.0f}s", file=sys.stderr, flush=True)
    meta["total_wall_s"] = round(time.perf_counter() - t_all, 1)
    finish_records(records, args, meta)

    from report import write_chart, write_markdown

    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(records, indent=1) + "\n")
    md_path = out / f"{stem}.md"
    table = write_markdown(records, md_path, meta)
    png_path = out / f"{stem}.png"
    write_chart(records, png_path, meta)
    print(table)
    print(f"\n[bench] wrote {json_path}, {md_path}, {png_path} in {meta['total_wall_s']:.0f}s")

    status = 0
    if any(r.get("status") == "error" for r in records):
        print("[bench] some runs failed (status=error above)", file=sys.stderr)
        status = 1
    skipped = sorted({r["backend"] for r in records
                      if r.get("status") == "skipped" and r["backend"] in args.require_backends})
    if skipped:
        print(f"[bench] required backends were skipped: {', '.join(skipped)}", file=sys.stderr)
        status = 1
    if args.baseline:
        from compare import compare_files

        if compare_files(json_path, args.baseline, args.threshold, out / f"{stem}_vs_baseline.md"):
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
