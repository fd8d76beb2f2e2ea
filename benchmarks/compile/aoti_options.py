"""Sweep AOTInductor / torch.compile options on the SD-1.5-architecture VAE decoder (CPU).

Standalone (uses diffusers directly, not the compile plugin) so that it can answer one question
before the plugin exists: which backend options make compiled decode faster than eager, and by how
much, at the CPU benchmark shape (latent 1x4x32x24 = 256x192 px), random weights, fp32.

    python benchmarks/compile/aoti_options.py [--variants a,b] [--repeats 5] [--out FILE]

Each variant runs in a fresh subprocess (own inductor cache dir, so compile times are cold).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SD15_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SHAPE = (1, 4, 32, 24)

# name -> (backend, options)
VARIANTS = {
    "eager": ("eager", {}),
    "inductor_static": ("inductor", {"freezing": False}),
    "inductor_static_freezing": ("inductor", {"freezing": True}),
    "aoti_static": ("aoti", {"dynamic": "none", "freezing": False}),
    "aoti_static_freezing": ("aoti", {"dynamic": "none", "freezing": True}),
    "aoti_dyn_hw_freezing": ("aoti", {"dynamic": "hw", "freezing": True}),
    "aoti_dyn_bhw_freezing": ("aoti", {"dynamic": "bhw", "freezing": True}),
    "aoti_dyn_bhw": ("aoti", {"dynamic": "bhw", "freezing": False}),
    # what the plugin did at first: freezing requested, but compiled with grad enabled (no effect)
    "aoti_static_freezing_grad": ("aoti", {"dynamic": "none", "freezing": True, "no_grad": False}),
}


class Decode:
    def __new__(cls, vae):
        import torch

        class _Decode(torch.nn.Module):
            def __init__(self, vae):
                super().__init__()
                self.vae = vae

            def forward(self, z):
                return self.vae.decode(z, return_dict=False)[0]

        return _Decode(vae)


def child(variant: str, repeats: int) -> dict:
    import torch
    from diffusers import AutoencoderKL

    backend, opts = VARIANTS[variant]
    torch.manual_seed(0)
    vae = AutoencoderKL(**SD15_VAE).eval()
    vae.encoder = None  # decode only, as the builder does
    module = Decode(vae).eval()
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(SHAPE, generator=gen)
    with torch.no_grad():
        ref = module(z)
    t0 = time.perf_counter()
    if backend == "eager":
        fn = module
    elif backend == "inductor":
        import torch._inductor.config as ic

        ic.freezing = opts["freezing"]
        fn = torch.compile(module, dynamic=False)
        with torch.no_grad():
            fn(z)
    else:
        from torch.export import Dim

        dyn = opts["dynamic"]
        example = z
        dynamic_shapes = None
        if dyn != "none":
            # non-square, batch >= 2 examples (see notes/compile.md gotchas)
            b = 2 if "b" in dyn else SHAPE[0]
            example = torch.randn(b, 4, 40, 24)
            dims = {}
            if "b" in dyn:
                dims[0] = Dim("batch", min=1, max=8)
            dims[2] = Dim("h", min=8, max=128)
            dims[3] = Dim("w", min=8, max=128)
            dynamic_shapes = {"z": dims}
        with torch.no_grad():
            ep = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes, strict=False)
        pkg = Path(tempfile.mkdtemp()) / "m.pt2"
        # freezing only takes effect when grad is disabled during compilation (inductor takes
        # the freezing path only `if config.freezing and not torch.is_grad_enabled()`)
        grad = torch.no_grad() if opts.get("no_grad", True) else torch.enable_grad()
        with grad:
            torch._inductor.aoti_compile_and_package(
                ep, package_path=str(pkg), inductor_configs={"freezing": opts["freezing"]}
            )
        fn = torch._inductor.aoti_load_package(str(pkg))
    compile_s = time.perf_counter() - t0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchutil import timed_runs

    with torch.no_grad():
        for _ in range(2):
            out = fn(z)
        stats = timed_runs(lambda: fn(z), repeats)
        out = fn(z)
    if isinstance(out, (list, tuple)):
        out = out[0]
    diff = (out - ref).abs().max().item()
    return {
        "variant": variant, "backend": backend, "options": opts, "shape": list(SHAPE),
        **stats, "compile_s": compile_s, "max_abs": diff, "max_rel": diff / ref.abs().max().item(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/aoti_options_vae_decode_cpu.json")
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.repeats)), flush=True)
        return
    results = []
    for variant in args.variants.split(","):
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=tempfile.mkdtemp(prefix="inductor-"))
        print(f"== {variant}", flush=True)
        proc = subprocess.run(
            [sys.executable, __file__, "--child", variant, "--repeats", str(args.repeats)],
            env=env, capture_output=True, text=True,
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(proc.stdout[-3000:], proc.stderr[-3000:], flush=True)
            results.append({"variant": variant, "error": proc.stderr[-1500:]})
        else:
            rec = json.loads(line[7:])
            results.append(rec)
            print(json.dumps(rec), flush=True)
        eager = next((r for r in results if r.get("variant") == "eager" and "median_ms" in r), None)
        if eager:
            for r in results:
                if "median_ms" in r:
                    r["speedup_vs_eager"] = eager["median_ms"] / r["median_ms"]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    for r in results:
        if "median_ms" in r:
            print(f"{r['variant']:28s} {r['median_ms']:9.1f} ms  x{r.get('speedup_vs_eager', 0):.2f}"
                  f"  compile {r['compile_s']:6.1f}s  rel {r['max_rel']:.1e}")
        else:
            print(f"{r['variant']:28s} FAILED")


if __name__ == "__main__":
    main()
