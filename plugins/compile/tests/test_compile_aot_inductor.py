"""Slow tests around one shared AOTInductor build of the tiny VAE decoder (see conftest)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from mlplatform_compile import InputError, build, load_module
from mlplatform_compile.backends.base import COMPILE_COUNT
from mlplatform_compile.testing import load_without_model_libraries

from mlplatform.errors import ArtifactError

pytestmark = pytest.mark.slow


def test_build_verifies_parity_across_the_range(aot_vae):
    manifest = aot_vae.manifest
    assert {"min", "max", "non_square", "example"} <= set(manifest["parity"])
    sizes = manifest["parity"]["non_square"]["sizes"]
    assert sizes["height"] != sizes["width"]
    assert manifest["parity"]["max"]["sizes"] == {"batch": 3, "height": 32, "width": 32}
    assert manifest["max_relative_error"] <= 1e-4
    assert manifest["random_weights"] is True and "RANDOM" in manifest["warning"]
    assert (aot_vae.artifact_dir / "model.pt2").is_file()
    assert "model.pt2" in manifest["files"]
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["output_names"] == ["image"]
    assert manifest["latency"]["eager_ms"] > 0
    # the shape profile: its own package, verified on its own, named in the artifact
    (profile,) = manifest["profiles"]
    assert profile["name"] == "b1_r48" and ".p-b1_r48." in aot_vae.name
    assert (aot_vae.artifact_dir / "profiles" / "b1_r48" / "model.pt2").is_file()
    assert "profiles/b1_r48/model.pt2" in manifest["files"]
    assert profile["parity"]["max"]["sizes"] == {"batch": 1, "height": 24, "width": 24}
    assert 0 <= profile["max_relative_error"] <= 1e-4
    assert manifest["max_relative_error"] >= profile["max_relative_error"]
    assert profile["route"]["use"] == "compiled"  # route_to_eager=never
    assert profile["latency"]["fallback_ms"] > 0 and profile["latency"]["compiled_ms"] > 0


def test_compiled_module_matches_eager_on_a_non_square_shape(aot_vae):
    inputs = aot_vae.example_inputs({"batch": 2, "height": 16, "width": 24}, seed=3)
    out = aot_vae.module(inputs)["image"]
    ref = aot_vae.eager_module(inputs)["image"]
    assert out.shape == (2, 3, 32, 48)
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-4


def test_reload_in_a_fresh_process(aot_vae, tmp_path):
    """A self-contained AOTInductor artifact loads and runs without diffusers or transformers,
    and runs each input on the package built for it: the profile's shape on the profile, any
    other shape in range on the ranged fallback; a shape outside the range is refused."""
    cases = []
    for sizes in ({"batch": 1, "height": 24, "width": 24}, "non_square"):
        inputs = aot_vae.example_inputs(sizes, seed=5)
        expected = aot_vae.eager_module(inputs)["image"]  # computed here, in the parent
        cases.append({"inputs": inputs, "expected": expected})
    cases.append({"inputs": {"latent": torch.randn(1, 4, 24, 40)}, "expected": torch.zeros(1)})
    torch.save(cases, tmp_path / "io.pt")
    proc = load_without_model_libraries(aot_vae.artifact_dir, tmp_path / "io.pt")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["loaded"] == []
    profile, fallback, outside = result["results"]
    assert profile["profile"] == "b1_r48" and profile["rel"] < 1e-4
    assert fallback["profile"] == "fallback" and fallback["rel"] < 1e-4
    # packages load on first use: the profile's input did not load the ranged fallback
    assert profile["in_memory"] == ["b1_r48"]
    assert fallback["in_memory"] == ["fallback", "b1_r48"]
    assert "outside the compiled range" in outside["refused"]
    assert "profiles: b1_r48 (compiled), fallback (compiled)" in result["repr"]


def test_second_build_reuses_the_artifact(aot_vae, compile_cache, tiny_decode):
    package = aot_vae.artifact_dir / "model.pt2"
    mtime = package.stat().st_mtime_ns
    created = aot_vae.manifest["created_unix"]
    before = COMPILE_COUNT["n"]
    again = build("vae_decode", "aot_inductor", cache_dir=compile_cache, **tiny_decode)
    assert again.cached is True
    assert COMPILE_COUNT["n"] == before
    assert again.artifact_dir == aot_vae.artifact_dir
    assert package.stat().st_mtime_ns == mtime and again.manifest["created_unix"] == created


def test_flipped_byte_is_detected(aot_vae, tmp_path):
    copy = tmp_path / aot_vae.artifact_dir.name
    shutil.copytree(aot_vae.artifact_dir, copy)
    package = copy / "model.pt2"
    data = bytearray(package.read_bytes())
    data[len(data) // 2] ^= 0xFF
    package.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_module(copy)


def test_torch_version_mismatch_is_refused(aot_vae, tmp_path):
    copy = tmp_path / aot_vae.artifact_dir.name
    shutil.copytree(aot_vae.artifact_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["versions"]["torch"] = "1.0.0"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="torch 1.0.0"):
        load_module(copy)


def test_inputs_are_checked_before_running(aot_vae):
    module = aot_vae.module
    ok = aot_vae.example_inputs("min")["latent"]
    with pytest.raises(InputError, match="outside the compiled range"):
        module(latent=torch.randn(4, 4, 16, 16))  # batch max is 3
    with pytest.raises(InputError, match="outside the compiled range"):
        module(latent=torch.randn(1, 4, 16, 40))  # width max is 32 latents (64 px)
    with pytest.raises(InputError, match="compiled for exactly 4"):
        module(latent=torch.randn(1, 3, 16, 16))
    with pytest.raises(InputError, match="dtype"):
        module(latent=ok.double())
    with pytest.raises(InputError, match="missing"):
        module(z=ok)
    with pytest.raises(InputError, match="is on meta"):
        module(latent=ok.to("meta"))
    assert module(latent=ok)["image"].shape == (1, 3, 32, 32)


def test_inductor_build_and_reload(compile_cache, tiny_decode, tmp_path):
    # encoder pixels must be multiples of the scale factor: a range torch.compile rejected when
    # the dims were marked with mark_dynamic's hard bounds
    kwargs = {**tiny_decode, "build_kwargs": {"batch_size": [1, 2], "resolution": [32, 48]}}
    # built in a fresh process, as a job builds it: inductor keys its cache entries on process
    # state, and after this session's AOTInductor compiles it writes entries that a fresh
    # process does not find (torch 2.14; see the cache check below)
    built = subprocess.run(
        [
            sys.executable,
            "-c",
            "from mlplatform_compile import build; "
            f"build('vae_encode', 'inductor', cache_dir={str(compile_cache)!r}, **{kwargs!r})",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    result = build("vae_encode", "inductor", cache_dir=compile_cache, **kwargs)
    assert result.cached is True  # the same artifact, reused here
    assert result.manifest["max_relative_error"] <= 1e-4
    assert {"min", "max", "non_square"} <= set(result.manifest["parity"])
    inputs = result.example_inputs("non_square")
    ref = result.eager_module(inputs)["latent"]
    reloaded = load_module(result.artifact_dir)
    out = reloaded(inputs)["latent"]
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-4
    # freezing (the default) really applied, at build and reload: convolutions run as prepacked
    # oneDNN kernels, not aten's. torch.compile(options={"freezing": True}) alone compiled aten
    # convolutions and addmm, as with freezing off
    for module in (result.module, reloaded) if torch.backends.mkldnn.is_available() else ():
        module(inputs)  # compiled (or loaded) first: compiling traces aten ops of its own
        with torch.no_grad(), torch.profiler.profile() as profiled:
            module(inputs)
        ops = {event.key for event in profiled.key_averages()}
        assert "mkldnn::_convolution_pointwise" in ops and "aten::convolution" not in ops, ops

    # the artifact is a manifest plus inductor's persistent cache: the manifest names the cache,
    # the build filled it, and a fresh process that knows only the artifact path (no
    # TORCHINDUCTOR_CACHE_DIR in its environment) compiles from it. A frozen graph bypasses
    # inductor's FX graph cache (torch 2.14), so the fresh process traces and lowers the graph
    # again, but at a shape the build compiled it reuses every C++ kernel: no new .so files
    cache = Path(result.manifest["backend_extra"]["inductor_cache_dir"])
    assert cache.is_dir() and any(p.is_file() for p in cache.rglob("*")), cache
    kernels_before = set(cache.rglob("*.so"))
    assert kernels_before
    inputs = result.example_inputs("example", seed=5)  # the shape compiled at build time
    expected = result.eager_module(inputs)["latent"]
    torch.save({"inputs": inputs, "expected": expected}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import json, os, torch
        # importing torch._dynamo first writes torch's default TORCHINDUCTOR_CACHE_DIR into the
        # environment; the loader must still use the cache the manifest names
        from torch._dynamo.utils import counters
        from mlplatform_compile import load_module
        module = load_module({str(result.artifact_dir)!r})
        data = torch.load({str(tmp_path / "io.pt")!r}, weights_only=True)
        out = module(data["inputs"])["latent"]
        expected = data["expected"]
        print("RESULT " + json.dumps({{
            "rel": ((out - expected).abs().max() / expected.abs().max()).item(),
            "cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
            "hits": counters["inductor"]["fxgraph_cache_hit"]
                    + counters["aot_autograd"]["autograd_cache_hit"],
            "misses": counters["inductor"]["fxgraph_cache_miss"],
            "bypassed": counters["inductor"]["fxgraph_cache_bypass"],
        }}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fresh = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert fresh["cache_dir"] == str(cache)
    assert fresh["misses"] == 0 and (fresh["hits"] > 0 or fresh["bypassed"] > 0), fresh
    assert set(cache.rglob("*.so")) == kernels_before
    assert fresh["rel"] < 1e-4


def test_encoder_exports_pixels_as_multiples_of_the_scale_factor(compile_cache, tiny_decode):
    result = build(
        "vae_encode",
        "aot_inductor",
        cache_dir=compile_cache,
        **{**tiny_decode, "build_kwargs": {"batch_size": [1, 2], "resolution": [32, 64]}},
    )
    assert result.manifest["max_relative_error"] <= 1e-4
    sizes = result.manifest["parity"]["non_square"]["sizes"]
    assert (sizes["height"], sizes["width"]) == (32, 64)
    assert result.module(image=torch.randn(1, 3, 36, 40))["latent"].shape == (1, 4, 18, 20)
    with pytest.raises(InputError, match="multiple of 2"):
        result.module(image=torch.randn(1, 3, 33, 40))
