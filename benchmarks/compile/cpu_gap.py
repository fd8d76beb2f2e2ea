#!/usr/bin/env python
"""Where the CPU time goes: eager vs AOTInductor (freezing, one static shape, variants of
inductor's options) vs ONNX Runtime on the SD-1.5-architecture VAE decoder, per operator class.

    python benchmarks/compile/cpu_gap.py --onnx ARTIFACT/_race/onnxruntime/model.onnx \
        [--variants default,no_layout_opt,no_prepack,max_autotune] [--repeats 3]

Issue 10 (c): why is aot_inductor about 2x slower than ONNX Runtime on this decoder on CPU?
Each variant is a static AOTInductor package (freezing on, as the plugin builds it; inductor's
kernel profiling on so the generated C++ kernels show in the profile). One process; every runner is timed
interleaved (median), then profiled once (torch.profiler for torch, ORT's own profiler for ORT),
and the self time is summed per operator class: convolution, normalisation, attention / matmul,
fused element-wise kernels (inductor's generated C++), other. Random weights (speed does not
depend on them). Prints one JSON document; --out writes it too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# inductor config overrides per variant (freezing is on in all of them)
VARIANTS = {
    "default": {},
    # inductor's layout optimisation turns convolution activations to channels-last
    "no_layout_opt": {"layout_optimization": False},
    # oneDNN weight prepacking of frozen convolution weights (mkldnn._convolution_pointwise)
    "no_prepack": {"cpp.weight_prepack": False},
    # max-autotune: time oneDNN against inductor's C++ GEMM templates per convolution / matmul
    "max_autotune": {"max_autotune": True},
    # GroupNorm kept out of inductor's generated code: ATen's native_group_norm as an extern
    # kernel (a global change to inductor's tables, so this variant must be compiled last)
    "groupnorm_aten": {},
}


def op_class(name: str) -> str:
    low = name.lower()
    if "conv" in low:
        return "convolution"
    if "norm" in low:
        return "normalisation"
    if any(k in low for k in ("matmul", "bmm", "addmm", "gemm", "linear", "attention", "softmax",
                              "mm")):
        return "attention / matmul"
    if "cpp_fused" in low or "fused" in low:
        return "fused element-wise (generated)"
    if any(k in low for k in ("upsample", "resize", "interpolate")):
        return "upsample"
    return "other"


def torch_profile(fn, inputs) -> dict[str, float]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(*inputs)
    totals: dict[str, float] = defaultdict(float)
    top: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("ProfilerStep") or event.key in ("aten::empty", "aten::to"):
            continue
        ms = event.self_cpu_time_total / 1e3
        totals[op_class(event.key)] += ms
        top[event.key] += ms
    head = dict(sorted(top.items(), key=lambda kv: -kv[1])[:8])
    return {"by_class_ms": {k: round(v, 1) for k, v in totals.items()},
            "top_ops_ms": {k: round(v, 1) for k, v in head.items()}}


def ort_session(path: str, profile_prefix: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def ort_runner(session):
    import torch

    names = [i.name for i in session.get_inputs()]

    def run(*inputs):
        out = session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})
        return tuple(torch.from_numpy(o) for o in out)
    return run


def ort_profile(path: str, inputs) -> dict:
    prefix = os.path.join(tempfile.mkdtemp(prefix="ortprof_"), "p")
    session = ort_session(path, prefix)
    run = ort_runner(session)
    run(*inputs)
    run(*inputs)
    trace = session.end_profiling()
    events = json.loads(Path(trace).read_text())
    # keep only the second run's node events
    runs = [e for e in events if e.get("name") == "model_run"]
    start = runs[-1]["ts"] if runs else 0
    totals: dict[str, float] = defaultdict(float)
    top: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or event["ts"] < start or not event["name"].endswith("_kernel_time"):
            continue
        op = event.get("args", {}).get("op_name", "?")
        ms = event["dur"] / 1e3
        totals[op_class(op)] += ms
        top[op] += ms
    head = dict(sorted(top.items(), key=lambda kv: -kv[1])[:8])
    return {"by_class_ms": {k: round(v, 1) for k, v in totals.items()},
            "top_ops_ms": {k: round(v, 1) for k, v in head.items()}}


def compile_variant(program, name: str, folder: Path):
    """One AOTInductor package of the exported decoder with the variant's inductor options (each
    is its own .so: no compiled code is shared between variants)."""
    import torch

    configs = {"freezing": True, "cpp.enable_kernel_profile": True, **VARIANTS[name]}
    if name == "groupnorm_aten":
        from torch._inductor import decomposition, lowering

        aten = torch.ops.aten
        decomposition.decompositions.pop(aten.native_group_norm.default, None)
        lowering.make_fallback(aten.native_group_norm, warn=False, override_decomp=True)
    package = folder / f"{name}.pt2"
    started = time.perf_counter()
    with torch.no_grad():
        torch._inductor.aoti_compile_and_package(program, package_path=str(package),
                                                 inductor_configs=configs)
    seconds = time.perf_counter() - started
    return torch._inductor.aoti_load_package(str(package)), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", help="an onnxruntime package of the same decoder (model.onnx)")
    parser.add_argument("--variants", default="default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latent", default="1,4,24,16")
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    import torch
    from mlplatform_compile import eager_model
    from mlplatform_compile.timing import time_interleaved

    torch.set_grad_enabled(False)
    builder, _model = eager_model("vae_decode", "sd15_vae")
    eager = builder.forward_module().eval()
    shape = [int(x) for x in args.latent.split(",")]
    inputs = (torch.randn(*shape, generator=torch.Generator().manual_seed(0)),)
    runners = {"eager": eager}
    compile_s = {}
    folder = Path(tempfile.mkdtemp(prefix="cpu_gap_"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(folder / "inductor"))
    program = torch.export.export(eager, inputs, strict=False)  # static: the one shape timed
    for name in [v for v in args.variants.split(",") if v]:
        runners[f"aot_inductor ({name})"], compile_s[name] = compile_variant(program, name, folder)
        print(f"[cpu_gap] compiled {name} in {compile_s[name]:.0f}s", flush=True)
    if args.onnx:
        runners["onnxruntime"] = ort_runner(ort_session(args.onnx))
    reference = eager(*inputs)[0]
    errors = {}
    for label, fn in runners.items():
        out = fn(*inputs)[0]
        errors[label] = ((out - reference).abs().max() / reference.abs().max()).item()
    labels = list(runners)
    load_before = os.getloadavg()
    medians = time_interleaved([runners[k] for k in labels], inputs, args.repeats, pause=0.3)
    load_after = os.getloadavg()
    profiles = {label: torch_profile(fn, inputs) for label, fn in runners.items()
                if label != "onnxruntime"}
    if args.onnx:
        profiles["onnxruntime"] = ort_profile(args.onnx, inputs)
    eager_ms = medians[labels.index("eager")] * 1e3
    result = {
        "model": "sd15_vae decoder, RANDOM weights", "latent": shape, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "repeats": args.repeats,
        "load_avg": {"before": [round(x, 2) for x in load_before],
                     "after": [round(x, 2) for x in load_after]},
        "runners": {label: {"median_ms": round(m * 1e3, 1), "vs_eager": round(eager_ms / (m * 1e3), 3),
                            "max_rel_error": errors[label], "profile": profiles[label]}
                    for label, m in zip(labels, medians, strict=True)},
        "compile_s": {k: round(v, 1) for k, v in compile_s.items()},
        "inductor_variants": VARIANTS,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
