"""Shape profiles: how they are declared, checked, named, routed and loaded. The compiled profile
itself (parity, selection in a fresh process) is tested on the shared build in
test_compile_aot_inductor.py."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from mlplatform_compile import builder_class, load_module
from mlplatform_compile.loader import loaded_packages
from mlplatform_compile.pipeline import decide_route

from mlplatform.errors import ConfigError


def tiny_builder(name="vae_decode", hf_hub="builtin:tiny_vae", **build_kwargs):
    return builder_class(name)(
        hf_hub=hf_hub, random_weights=True, backend="eager", build_kwargs=build_kwargs
    )


def test_profiles_are_named_keyed_and_may_set_height_and_width_apart():
    plain = tiny_builder(batch_size=[1, 3], resolution=[32, 64])
    profiled = tiny_builder(
        batch_size=[1, 3],
        height=[32, 64],
        width=[32, 96],
        profiles=[{"batch_size": 1, "resolution": 48}, {"height": 32, "width": [64, 96]}],
    )
    first, second = profiled.profiles()
    assert (first.name, second.name) == ("b1_r48", "h32_w64-96")
    assert {n: (d.min, d.max) for n, d in first.dims.items()} == {
        "batch": (1, 1), "height": (24, 24), "width": (24, 24),
    }
    assert {n: (d.min, d.max) for n, d in second.dims.items()} == {
        "batch": (1, 3), "height": (16, 16), "width": (32, 48),
    }
    # separate height and width ranges in the readable name, the profiles after it
    name = profiled.artifact_name("0" * 12)
    assert ".r32-64x32-96." in name and ".p-b1_r48+h32_w64-96." in name
    key, plain_key = profiled.artifact_key(), plain.artifact_key()
    assert [p["name"] for p in key["profiles"]] == ["b1_r48", "h32_w64-96"]
    assert plain_key["profiles"] == []
    # another profile list is another artifact
    other = tiny_builder(
        batch_size=[1, 3], height=[32, 64], width=[32, 96], profiles=[{"resolution": 48}]
    )
    assert other.artifact_key()["profiles"] != key["profiles"]


@pytest.mark.parametrize(
    ("profiles", "message"),
    [
        ([{"batch_size": 1, "resolution": 128}], "lies outside the build range"),
        ([{"batch_size": 4}], "lies outside the build range"),
        ([{"name": "x", "batch_size": 1}, {"name": "x", "batch_size": 2}], "already taken"),
        ([{"name": "only_a_name"}], "sets no sizes"),
    ],
)
def test_bad_profiles_are_refused_before_compiling(profiles, message):
    builder = tiny_builder(batch_size=[1, 3], resolution=[32, 64], profiles=profiles)
    with pytest.raises(ConfigError, match=message):
        builder.profiles()


def test_a_text_profile_cannot_set_a_resolution():
    with pytest.raises(ConfigError, match="resolution"):
        tiny_builder("clip_text", "builtin:tiny_clip_text", profiles=[{"resolution": 64}])


def test_route_to_eager_only_where_allowed_and_slower():
    slower = {"speedup": 0.9, "compiled_ms": 11.0, "eager_ms": 10.0, "sizes": {"batch": 1}}
    faster = {**slower, "speedup": 1.1, "compiled_ms": 9.0}

    def route(setting, what, latency, backend="aot_inductor"):
        builder = SimpleNamespace(route_to_eager=setting, backend=SimpleNamespace(name=backend))
        return decide_route(builder, what, latency)["use"]

    assert route("profiles", "b1_r48", slower) == "eager"
    assert route("profiles", "fallback", slower) == "compiled"
    # ... with its benchmark shape, where it was slower, sent to eager
    builder = SimpleNamespace(route_to_eager="profiles", backend=SimpleNamespace(name="onnxruntime"))
    assert decide_route(builder, "fallback", slower)["eager_at"] == [{"batch": 1}]
    assert "eager_at" not in decide_route(builder, "fallback", faster)
    assert route("all", "fallback", slower) == "eager"
    assert route("never", "b1_r48", slower) == "compiled"
    assert route("profiles", "b1_r48", faster) == "compiled"
    assert route("profiles", "b1_r48", {}) == "compiled"  # not timed: nothing to decide on
    assert route("profiles", "b1_r48", slower, backend="eager") == "compiled"
    # a profile slower than the ranged fallback at its own shape runs on the fallback
    behind = {**faster, "fallback_ms": 8.0}
    assert route("profiles", "b1_r48", behind) == "fallback"
    assert route("never", "b1_r48", behind) == "compiled"
    assert route("profiles", "b1_r48", {**slower, "fallback_ms": 10.5}) == "eager"
    assert route("profiles", "fallback", {**slower, "fallback_ms": 8.0}) == "compiled"


@pytest.mark.slow
def test_a_profile_routed_to_eager_runs_eager_unless_asked(aot_vae, tmp_path):
    """The manifest's routing decides what runs; routing="compiled" loads the package anyway."""
    copy = tmp_path / aot_vae.artifact_dir.name
    shutil.copytree(aot_vae.artifact_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["profiles"][0]["route"] = {"use": "eager", "reason": "slower than eager (test)"}
    (copy / "manifest.json").write_text(json.dumps(manifest))

    inputs = aot_vae.example_inputs({"batch": 1, "height": 24, "width": 24}, seed=2)
    expected = aot_vae.eager_module(inputs)["image"]
    routed = load_module(copy)
    assert "b1_r48 (eager)" in repr(routed)
    torch.testing.assert_close(routed(inputs)["image"], expected, rtol=0, atol=0)
    assert routed.last_profile == "b1_r48"
    assert isinstance(routed.package("b1_r48"), torch.nn.Module)  # the eager model

    compiled = load_module(copy, routing="compiled")
    assert not isinstance(compiled.package("b1_r48"), torch.nn.Module)
    out = compiled(inputs)["image"]
    assert ((out - expected).abs().max() / expected.abs().max()).item() < 1e-4

    # routed to the ranged fallback: the profile's shape runs on the fallback's package, and only
    # that package is loaded
    manifest["profiles"][0]["route"] = {"use": "fallback", "reason": "fallback faster (test)"}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    on_fallback = load_module(copy)
    assert "b1_r48 (fallback)" in repr(on_fallback)
    out = on_fallback(inputs)["image"]
    assert ((out - expected).abs().max() / expected.abs().max()).item() < 1e-4
    assert on_fallback.package("b1_r48") is on_fallback.package("fallback")
    assert loaded_packages(on_fallback) == ["fallback"]


@pytest.mark.slow
def test_the_ranged_package_runs_eager_only_at_the_shape_it_lost(aot_vae, tmp_path):
    """job.route_to_eager=profiles: the shape where the ranged package was timed slower than eager
    runs eager; every other shape of the range still runs the compiled package."""
    copy = tmp_path / aot_vae.artifact_dir.name
    shutil.copytree(aot_vae.artifact_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    lost = {"batch": 2, "height": 20, "width": 20}
    manifest["fallback_route"] = {"use": "compiled", "eager_at": [lost], "reason": "test"}
    (copy / "manifest.json").write_text(json.dumps(manifest))

    routed = load_module(copy)
    assert "fallback (compiled; eager at batch=2, height=20, width=20)" in repr(routed)
    inputs = aot_vae.example_inputs(lost, seed=3)
    expected = aot_vae.eager_module(inputs)["image"]
    torch.testing.assert_close(routed(inputs)["image"], expected, rtol=0, atol=0)
    assert (routed.last_profile, routed.last_route) == ("fallback", "eager")

    other = aot_vae.example_inputs({"batch": 2, "height": 20, "width": 22}, seed=3)
    out = routed(other)["image"]
    assert (routed.last_profile, routed.last_route) == ("fallback", "compiled")
    reference = aot_vae.eager_module(other)["image"]
    assert not torch.equal(out, reference)  # the compiled package ran, not eager
    assert ((out - reference).abs().max() / reference.abs().max()).item() < 1e-4

    compiled = load_module(copy, routing="compiled")
    compiled(inputs)
    assert compiled.last_route == "compiled"
