"""Every builder through its real loading code: a tiny model saved with save_pretrained (or a
tiny RRDBNet state dict for ESRGAN) in a temp dir, loaded back with HF_HUB_OFFLINE=1, built
with the eager backend. Plus the cache-rebuild and job paths, which need no compiler."""

from __future__ import annotations

import json

import pytest
import torch
from mlplatform_compile import build, load_module
from mlplatform_compile.model_source import load_shipped_config


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def save_diffusers(cls, config_name, directory):
    torch.manual_seed(0)
    model = cls.from_config(load_shipped_config(config_name))
    model.save_pretrained(directory)
    return model


def save_transformers(model_cls, config_cls, config_name, directory):
    torch.manual_seed(0)
    model = model_cls(config_cls.from_dict(load_shipped_config(config_name)))
    model.save_pretrained(directory)
    return model


def run(builder, source, tmp_path, **kw):
    return build(
        builder, "eager", hf_hub=str(source), cache_dir=tmp_path / "cache", benchmark_runs=0, **kw
    )


def test_vae_encode_and_decode_from_saved_pretrained(tmp_path):
    from diffusers import AutoencoderKL

    saved = save_diffusers(AutoencoderKL, "tiny_vae", tmp_path / "repo" / "vae")
    kwargs = {
        "build_kwargs": {"batch_size": [1, 2], "resolution": [32, 64]},
        "model_kwargs": {"subfolder": "vae"},
    }
    enc = run("vae_encode", tmp_path / "repo", tmp_path, **kwargs)
    image = enc.example_inputs("non_square")["image"]
    assert image.shape[2] != image.shape[3]
    latent = enc.module(image=image)["latent"]
    with torch.no_grad():
        expected = saved.encode(image).latent_dist.mode()
    torch.testing.assert_close(latent, expected)
    assert enc.random_weights is False and enc.manifest["model_source"]["subfolder"] == "vae"

    dec = run("vae_decode", tmp_path / "repo", tmp_path, **kwargs)
    with torch.no_grad():
        expected = saved.decode(latent).sample
    torch.testing.assert_close(dec.module(latent=latent)["image"], expected)
    assert ".random_weights." not in dec.name


def test_unet_from_saved_pretrained(tmp_path):
    from diffusers import UNet2DConditionModel

    save_diffusers(UNet2DConditionModel, "tiny_unet", tmp_path / "unet")
    result = run(
        "unet",
        tmp_path / "unet",
        tmp_path,
        build_kwargs={"batch_size": [1, 2], "resolution": [64, 128], "sequence_length": 8},
    )
    inputs = result.example_inputs("max")
    assert inputs["sample"].shape == (2, 4, 16, 16) and inputs["encoder_hidden_states"].shape == (
        2,
        8,
        32,
    )
    assert result.module(inputs)["sample"].shape == (2, 4, 16, 16)


def test_clip_text_from_saved_pretrained(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel

    save_transformers(CLIPTextModel, CLIPTextConfig, "tiny_clip_text", tmp_path / "clip")
    result = run("clip_text", tmp_path / "clip", tmp_path)
    out = result.module(result.example_inputs("max"))
    assert out["last_hidden_state"].shape == (2, 77, 32) and out["pooler_output"].shape == (2, 32)
    sequence = result.manifest["inputs"][0]["shape"][1]
    assert sequence["min"] == sequence["max"] == 77  # fixed 77 tokens by default


def test_t5_encoder_from_saved_pretrained(tmp_path):
    from transformers import T5Config, T5EncoderModel

    save_transformers(T5EncoderModel, T5Config, "tiny_t5", tmp_path / "t5")
    result = run(
        "t5_encoder",
        tmp_path / "t5",
        tmp_path,
        build_kwargs={"batch_size": [1, 2], "sequence_length": [4, 16]},
    )
    assert result.module(result.example_inputs("max"))["last_hidden_state"].shape == (2, 16, 32)


def test_esrgan_from_a_state_dict_spandrel_detects(tmp_path):
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    net = ESRGAN(
        **{k: v for k, v in load_shipped_config("tiny_esrgan").items() if not k.startswith("_")}
    )
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()},
        str(tmp_path / "tiny_x4.safetensors"),
    )
    result = run(
        "esrgan",
        tmp_path / "tiny_x4.safetensors",
        tmp_path,
        build_kwargs={"batch_size": [1, 2], "resolution": [16, 24]},
    )
    assert result.manifest["model_config"]["scale"] == 4
    assert result.manifest["model_config"]["architecture"] == "ESRGAN"
    image = result.example_inputs("non_square")["image"]
    assert result.module(image=image)["upscaled"].shape[-2:] == (
        image.shape[2] * 4,
        image.shape[3] * 4,
    )


def test_missing_local_model_offline_is_a_clear_error(tmp_path):
    from mlplatform.errors import ModelSourceError

    with pytest.raises(ModelSourceError, match="HF_HUB_OFFLINE"):
        run("vae_decode", "nobody/no-such-model", tmp_path)


def build_tiny_saved(cache_dir):
    """A tiny-VAE decoder artifact with a real payload file and no compiler: the conftest's
    `test_state_dict` backend writes the weights with torch.save and runs what it loads back.
    (An eager artifact is only manifest.json, so there would be no checksum to verify.)"""
    return build(
        "vae_decode",
        "test_state_dict",
        cache_dir=cache_dir,
        benchmark_runs=0,
        hf_hub="builtin:tiny_vae",
        random_weights=True,
        build_kwargs={"batch_size": [1, 2], "resolution": [32, 48]},
    )


def assert_payload_verified(result, backend):
    """The manifest lists the payload with its real sha256, and the module runs what it holds."""
    from mlplatform.api import sha256_file

    payload = result.artifact_dir / backend.payload
    assert list(result.manifest["files"]) == [backend.payload]
    assert result.manifest["files"][backend.payload]["sha256"] == sha256_file(payload)
    inputs = result.example_inputs("non_square")
    torch.testing.assert_close(
        load_module(result.artifact_dir)(inputs)["image"],
        result.eager_module(inputs)["image"],
        rtol=0,
        atol=0,
    )


def test_mismatched_cached_artifact_is_rebuilt(tmp_path, state_dict_backend):
    first = build_tiny_saved(tmp_path)
    assert_payload_verified(first, state_dict_backend)
    manifest_path = first.artifact_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["versions"]["torch"] = "0.0.1"
    manifest_path.write_text(json.dumps(manifest))
    second = build_tiny_saved(tmp_path)
    assert second.cached is False and second.artifact_dir == first.artifact_dir
    assert json.loads(manifest_path.read_text())["versions"]["torch"] == torch.__version__
    third = build_tiny_saved(tmp_path)
    assert third.cached is True
    assert_payload_verified(third, state_dict_backend)


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        ("flip", "does not match its sha256 checksum"),
        ("truncate", "bytes, the manifest says"),
        ("delete", "is missing"),
    ],
)
def test_altered_payload_is_refused_by_name_then_rebuilt(
    tmp_path, state_dict_backend, tamper, error
):
    from mlplatform.api import ArtifactError, sha256_file

    first = build_tiny_saved(tmp_path)
    payload = first.artifact_dir / state_dict_backend.payload
    original = payload.read_bytes()
    if tamper == "flip":
        data = bytearray(original)
        data[len(data) // 2] ^= 0xFF
        payload.write_bytes(bytes(data))
    elif tamper == "truncate":
        payload.write_bytes(original[:-16])
    else:
        payload.unlink()
    with pytest.raises(ArtifactError, match=error) as info:
        load_module(first.artifact_dir)
    assert f"artifact file {payload} " in str(info.value)  # names the file
    second = build_tiny_saved(tmp_path)
    assert second.cached is False and second.artifact_dir == first.artifact_dir
    assert sha256_file(payload) == second.manifest["files"][state_dict_backend.payload]["sha256"]
    assert_payload_verified(second, state_dict_backend)


def test_run_build_job_from_composed_config(tmp_path, capsys, monkeypatch):
    from mlplatform_compile.job import run_build_job

    from mlplatform.testing import compose_config

    monkeypatch.chdir(tmp_path)
    cfg = compose_config(
        [
            "job=build",
            "backend=eager",
            f"job.cache_dir={tmp_path / 'cache'}",
            "job.benchmark_runs=1",
            "device=cpu",
        ]
    )
    assert (
        cfg.job.name == "build" and cfg.builder.name == "vae_decode" and cfg.backend.name == "eager"
    )
    # eager against itself is always exactly 0, which a stubbed check would report too: perturb
    # the eager runner by a known relative error, so the figures the job records and prints must
    # be the measured ones
    from mlplatform_compile.backends.eager import EagerBackend

    delta = 2e-5

    def perturbed(self, request):
        return lambda *inputs: tuple(o + delta * o.abs().max() for o in request.module(*inputs))

    monkeypatch.setattr(EagerBackend, "compile", perturbed)
    summary = run_build_job(cfg)
    printed = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in printed and summary["artifact"] in printed and "latency" in printed
    assert summary["random_weights"] is True and summary["cached"] is False
    assert set(summary["parity"]) == {"min", "max", "non_square", "example"}
    for label, outputs in summary["parity"].items():
        assert outputs["image"] == pytest.approx(delta, rel=1e-2), label
        assert f"{outputs['image']:.3g}" in printed, label
    assert summary["max_relative_error"] == pytest.approx(delta, rel=1e-2)
    assert (
        json.loads((tmp_path / "build_summary.json").read_text())["artifact"] == summary["artifact"]
    )


def test_artifact_for_another_device_is_refused_then_rebuilt(tmp_path, state_dict_backend):
    from mlplatform.api import ArtifactError, DeviceError

    first = build_tiny_saved(tmp_path)
    assert_payload_verified(first, state_dict_backend)  # the files check passes: the device is refused
    manifest_path = first.artifact_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    here = manifest["device"]["capability"]
    manifest["device"]["capability"] = "AVX2" if here != "AVX2" else "AVX512"  # another CPU ISA
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="cannot run on"):
        load_module(first.artifact_dir)
    if not torch.cuda.is_available():
        manifest["device"].update(kind="cuda", name="NVIDIA H100", capability="sm90")
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(DeviceError, match="no CUDA device is available"):
            load_module(first.artifact_dir)
    second = build_tiny_saved(tmp_path)
    assert second.cached is False and second.artifact_dir == first.artifact_dir
    assert json.loads(manifest_path.read_text())["device"]["capability"] == here
    assert_payload_verified(second, state_dict_backend)
