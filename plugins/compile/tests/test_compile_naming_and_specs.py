"""Fast tests: artifact naming/hashing, map_function and skip keys, dynamic-range logic, errors."""

from __future__ import annotations

import sys
import types

import pytest
from mlplatform_compile import builder_class
from mlplatform_compile.naming import key_hash
from mlplatform_compile.specs import (
    Dim,
    InputSpec,
    as_range,
    example_sizes,
    export_dynamic_shapes,
    pixel_dim,
    verification_sets,
)

from mlplatform.errors import ConfigError, DeviceError, UnknownNameError


def make(builder="vae_decode", backend="eager", **kw):
    args = dict(
        hf_hub="builtin:tiny_vae",
        random_weights=True,
        label="t",
        build_kwargs={"batch_size": [1, 2], "resolution": [32, 64]},
    )
    args.update(kw)
    return builder_class(builder)(backend=backend, **args)


def name_of(builder):
    return builder.artifact_name(key_hash(builder.artifact_key()))


def test_name_is_readable_and_deterministic():
    a, b = make(), make()
    assert name_of(a) == name_of(b)
    name = name_of(a)
    assert name.startswith("autoencoder_kl.decode.t.b1-2.r32-64.float32.cpu_")
    assert ".random_weights." in name and name.split(".")[-1].startswith("eager-")


@pytest.mark.parametrize(
    "change",
    [
        {"dtype": "bfloat16"},
        {"build_kwargs": {"batch_size": [1, 4], "resolution": [32, 64]}},
        {"build_kwargs": {"batch_size": [1, 2], "resolution": [16, 64]}},
        {"backend": "inductor"},
        {"backend": "aot_inductor", "backend_options": {"freezing": False}},
        {"seed": 1},  # different random weights
    ],
)
def test_anything_that_changes_the_artifact_changes_the_name(change):
    base = make()
    other = make(**change)
    assert key_hash(base.artifact_key()) != key_hash(other.artifact_key())
    assert name_of(base) != name_of(other)


def test_backend_options_change_the_hash_only():
    a = make(backend="aot_inductor")
    b = make(backend="aot_inductor", backend_options={"freezing": False})
    assert name_of(a).rsplit("-", 1)[0] == name_of(b).rsplit("-", 1)[0]


def test_shipped_config_needs_explicit_random_weights():
    with pytest.raises(ConfigError, match="random_weights"):
        make(random_weights=False).source()


def test_unknown_builder_and_backend_names():
    with pytest.raises(UnknownNameError, match="vae_decode"):
        builder_class("vae_decod")
    with pytest.raises(UnknownNameError, match="aot_inductor"):
        make(backend="aot_inductr")


def test_unknown_build_kwargs_rejected():
    with pytest.raises(ConfigError, match="resolutio"):
        make(build_kwargs={"resolutio": 64})


def test_map_function_skip_keys_prune_decode_and_encode():
    decode = make()
    model = decode.load_eager()
    keys = set(model.state_dict())
    assert keys and not any(k.startswith(("encoder.", "quant_conv.")) for k in keys)
    assert any(k.startswith("decoder.") for k in keys) and any(
        k.startswith("post_quant_conv.") for k in keys
    )
    encode = make("vae_encode")
    keys = set(encode.load_eager().state_dict())
    assert not any(k.startswith(("decoder.", "post_quant_conv.")) for k in keys)
    assert any(k.startswith("encoder.") for k in keys)


def test_map_function_can_rename_drop_and_cast():
    import torch

    b = make(dtype="bfloat16")
    b.map_function_skip_keys = ("skip.",)
    original = b.map_function

    def mapper(key, tensor):
        if key == "drop":
            return None
        if key == "old":
            return "new", original(key, tensor)
        return original(key, tensor)

    b.map_function = mapper
    out = b.map_weights(
        {
            "skip.w": torch.ones(1),
            "drop": torch.ones(1),
            "old": torch.ones(1),
            "ids": torch.ones(1, dtype=torch.long),
        }
    )
    assert set(out) == {"new", "ids"}
    assert out["new"].dtype == torch.bfloat16 and out["ids"].dtype == torch.long


def test_ranges_and_pixel_dims():
    assert as_range(64, "r") == (64, 64) and as_range([32, 64], "r") == (32, 64)
    with pytest.raises(ConfigError):
        as_range([64, 32], "r")
    with pytest.raises(ConfigError):
        as_range("big", "r")
    assert pixel_dim("h", (64, 128), 8) == Dim("h", 8, 16)
    with pytest.raises(ConfigError, match="scale factor"):
        pixel_dim("h", (60, 128), 8)
    with pytest.raises(ConfigError, match="multiples of 8"):
        Dim("h", 12, 64, multiple=8)


def test_export_spec_from_ranges():
    from torch.export import Dim as TorchDim  # noqa: F401

    batch = Dim("batch", 1, 4)
    specs = [
        InputSpec("image", (batch, 3, Dim("height", 16, 64, 8), Dim("width", 16, 64, 8))),
        InputSpec("ids", (batch, Dim("seq", 77, 77)), dtype="long"),
    ]
    shapes = export_dynamic_shapes(specs)
    assert set(shapes["image"]) == {0, 2, 3}
    assert shapes["image"][0] is shapes["ids"][0]  # the batch is one symbol across inputs
    assert "8" in str(shapes["image"][2])  # 8 * Dim for multiples
    assert shapes["ids"] == {0: shapes["image"][0]}  # a static dim gets no symbol
    sizes = example_sizes(specs)
    assert sizes["batch"] >= 2 and sizes["height"] != sizes["width"]
    assert sizes["height"] % 8 == 0 and sizes["width"] % 8 == 0
    sets = {s.label: s.sizes for s in verification_sets(specs)}
    assert sets["min"] == {"batch": 1, "height": 16, "width": 16, "seq": 77}
    assert sets["max"] == {"batch": 4, "height": 64, "width": 64, "seq": 77}
    assert sets["non_square"]["height"] != sets["non_square"]["width"]


def test_aitemplate_absent_is_a_clear_error(monkeypatch, tmp_path):
    import shutil

    import torch

    # the same machine everywhere (also on a GPU runner): nothing of AITemplate's stack present
    for module in ("aitemplate", "aitemplate.compiler", "fx2ait", "fx2ait.fx2ait"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    real_which = shutil.which

    def which(cmd, *args, **kwargs):
        return None if cmd == "nvcc" else real_which(cmd, *args, **kwargs)

    monkeypatch.setattr(shutil, "which", which)
    with pytest.raises(DeviceError) as info:
        make(backend="aitemplate", cache_dir=tmp_path)()
    problem, fix = info.value.problem, info.value.fix
    assert problem.startswith("backend=aitemplate cannot run here: ")
    # every missing piece is named, each exactly once
    for missing in (
        "the `aitemplate` package is not importable (no source-built AITemplate)",
        "fx2ait (AITemplate's torch.fx front end, in AITemplate/fx2ait) is not importable",
        "no CUDA device is available (AITemplate generates CUDA kernels only)",
        "nvcc (the CUDA compiler) is not on PATH",
    ):
        assert problem.count(missing) == 1, (missing, problem)
    # the fix says how to get the real AITemplate and warns against the PyPI placeholder
    assert "git clone --recursive https://github.com/facebookincubator/AITemplate" in fix
    assert "never `pip install aitemplate`" in fix and "backend=aot_inductor" in fix
    assert not any(tmp_path.iterdir())  # refused before anything was built


def test_aitemplate_placeholder_is_detected(monkeypatch):
    from mlplatform_compile.backends.aitemplate import detect

    monkeypatch.setitem(sys.modules, "aitemplate", types.ModuleType("aitemplate"))
    monkeypatch.setitem(sys.modules, "aitemplate.compiler", None)
    assert any("placeholder" in m for m in detect())


def test_build_refuses_to_save_an_artifact_above_tolerance(tmp_path):
    from mlplatform_compile import Backend

    from mlplatform.errors import ArtifactError

    class Noisy(Backend):
        name = "noisy"

        def compile(self, request):
            def run(*inputs):
                return tuple(o + 1e-2 * o.abs().max() for o in request.module(*inputs))

            return run

    builder = make(backend=Noisy(), cache_dir=tmp_path, benchmark_runs=0)
    with pytest.raises(ArtifactError, match="tolerance"):
        builder()
    assert not any(p.name.startswith("autoencoder_kl") for p in tmp_path.iterdir())


def test_eager_model_from_shipped_config():
    from mlplatform_compile import eager_model

    builder, model = eager_model("clip_text", "tiny_clip_text")
    out = builder.forward_module()(*builder.example_inputs("min").values())
    assert out[0].shape == (1, 77, 32)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_the_label_follows_the_source_unless_given():
    """A default label cannot go stale: an SD 1.5 VAE is not named after the tiny default."""
    from mlplatform_compile.naming import label_from_source

    assert make(label="").label == "tiny_vae"
    assert make(label="mine").label == "mine"
    assert label_from_source("stable-diffusion-v1-5/stable-diffusion-v1-5") == "stable-diffusion-v1-5"
    assert label_from_source("/models/RealESRGAN_x4plus.pth") == "RealESRGAN_x4plus"
    assert ".tiny_vae." in name_of(make(label=""))
