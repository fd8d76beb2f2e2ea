#!/usr/bin/env python
"""Peak RSS of a loaded compiled module at inference vs the eager model, each in a fresh process.

    python benchmarks/compile/memory.py ARTIFACT_DIR [--sizes '{"batch": 1, ...}'] [--runs 2]

Each side runs in its own fresh process: import everything (torch, the model libraries, the
runtimes), note RSS (the base), load (eager: the builder rebuilds the model from the manifest's
source; compiled: `load_module`), reset the high-water mark, run at `--sizes`
(default: the artifact's largest shape) once (the first call: packages `load_module` left lazy
load here), reset it again, run `--runs` times. Figures, in MB above the base: `resident` (after
load), `load_peak` (VmHWM while loading), `first_call_peak` (VmHWM during the first call: a lazy
package's loading shows here), `peak` (VmHWM during the later runs: the item-4 figure). Prints
one JSON line with both sides and the ratio peak(compiled)/peak(eager).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
TAG = "MEMORY_RESULT "


def child(artifact: str, side: str, sizes: dict | None, runs: int, candidate: str | None = None,
          package: str = "fallback") -> dict:
    import torch

    for library in ("diffusers", "transformers", "spandrel", "onnxruntime", "openvino"):
        try:  # imported now so the base includes every library either side may use
            __import__(library)
        except ImportError:
            pass
    from mlplatform_compile import builder_class, load_module
    from run import hwm_mb, release_freed_memory, reset_hwm, rss_mb

    torch.set_grad_enabled(False)
    manifest = json.loads((Path(artifact) / "manifest.json").read_text())
    release_freed_memory()
    base = rss_mb()
    reset_hwm()
    if side == "eager":
        builder = builder_class(manifest["builder"])(
            backend="eager", device="cpu", **manifest["builder_args"]
        )
        module = builder.forward_module()
        names = [spec["name"] for spec in manifest["inputs"]]

        def run(inputs):
            return module(*[inputs[n] for n in names])
    elif candidate:  # one raced package of a backend=auto artifact, loaded on its own
        from mlplatform_compile.backends.auto import candidate_runner

        module = candidate_runner(artifact, manifest, candidate, package)
        names = [spec["name"] for spec in manifest["inputs"]]

        def run(inputs):
            return module(*[inputs[n] for n in names])
    else:
        compiled = load_module(artifact, device="cpu")
        module = compiled

        def run(inputs):
            return compiled(inputs)
    load_peak = hwm_mb()
    release_freed_memory()
    resident = rss_mb()
    sizes = sizes or manifest["parity"].get("max", {}).get("sizes")
    if sizes is None:
        sizes = {n: d["max"] for spec in manifest["inputs"] for d in spec["shape"]
                 if isinstance(d, dict) for n in [d["name"]]}
    inputs = _inputs(manifest, sizes)
    # the first call loads what load_module left lazy (the package this shape needs) and makes
    # one-time allocations: its peak is reported apart, the steady state is what is compared
    reset_hwm()
    run(inputs)
    first_call_peak = hwm_mb()
    release_freed_memory()
    reset_hwm()
    for _ in range(runs):
        run(inputs)
    peak = hwm_mb()
    return {
        "side": side,
        "sizes": sizes,
        "base_mb": round(base, 1),
        "resident_mb": round(resident - base, 1),
        "peak_mb": round(peak - base, 1),
        "load_peak_mb": round(load_peak - base, 1),
        "first_call_peak_mb": round(first_call_peak - base, 1),
        "profile": getattr(module, "last_profile", None),
    }


def _inputs(manifest: dict, sizes: dict) -> dict:
    """Random inputs at `sizes` from the manifest's input specs (no builder needed)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    dtype = getattr(torch, manifest["dtype"])
    out = {}
    for spec in manifest["inputs"]:
        shape = [sizes[d["name"]] if isinstance(d, dict) else d for d in spec["shape"]]
        if spec["dtype"] == "long":
            out[spec["name"]] = torch.randint(spec["low"], spec["high"], shape, generator=generator)
        elif spec["dtype"] == "float_uniform":
            out[spec["name"]] = (torch.rand(shape, generator=generator)
                                 * (spec["high"] - spec["low"]) + spec["low"]).to(dtype)
        else:
            out[spec["name"]] = torch.randn(shape, generator=generator).to(dtype)
    return out


def measure(artifact: str | Path, sizes: dict | None = None, runs: int = 2,
            candidate: str | None = None, package: str = "fallback") -> dict:
    """Both sides, each in a fresh process; the compiled side's peak over eager's. With
    `candidate`, the compiled side is that raced package of a backend=auto artifact alone."""
    results = {}
    for side in ("eager", "compiled"):
        command = [sys.executable, str(Path(__file__).resolve()), str(artifact), "--child", side,
                   "--runs", str(runs)]
        if sizes:
            command += ["--sizes", json.dumps(sizes)]
        if candidate and side == "compiled":
            command += ["--candidate", candidate, "--package", package]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(TAG)), None)
        if proc.returncode != 0 or line is None:
            results[side] = {"error": (proc.stderr or proc.stdout).strip()[-2000:]}
            continue
        results[side] = json.loads(line[len(TAG):])
    eager, compiled = results.get("eager", {}), results.get("compiled", {})
    ratio = None
    if eager.get("peak_mb") and compiled.get("peak_mb") is not None:
        ratio = round(compiled["peak_mb"] / eager["peak_mb"], 3)
    return {"artifact": str(artifact), "candidate": candidate, "package": package, "eager": eager, "compiled": compiled,
            "peak_ratio": ratio, "target": 1.25,
            "method": "VmHWM minus RSS after imports, HWM reset after load, fresh process each"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact")
    parser.add_argument("--sizes", type=json.loads, default=None)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--child", choices=("eager", "compiled"))
    parser.add_argument("--candidate", default=None)
    parser.add_argument("--package", default="fallback")
    args = parser.parse_args(argv)
    if args.child:
        print(TAG + json.dumps(child(args.artifact, args.child, args.sizes, args.runs,
                                     args.candidate, args.package)))
        return 0
    print(json.dumps(measure(args.artifact, args.sizes, args.runs), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
