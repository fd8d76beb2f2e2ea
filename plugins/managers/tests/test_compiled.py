"""The compiled manager: artifacts built by the compile plugin's public API (`build`: eager
backend on the tiny pipeline's own VAE decoder, text encoder and UNet, and one real AOTInductor
build of the decoder at the test's static shape, about 20 s on 2 cores), listed in a catalog,
loaded through `mlplatform_compile.load_module`, and swapped into the Stable Diffusion pipeline;
images match the eager pipeline's, and the eager parts come back."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from managers_helpers import file_entries, write_catalog
from mlplatform_managers import ModelManager
from mlplatform_managers.schemas import Txt2ImgTaskConfig
from mlplatform_managers.tasks import TaskContext
from mlplatform_managers.tasks.diffusion import Txt2ImgTask
from PIL import Image

from mlplatform.api import ConfigError

compile_api = pytest.importorskip("mlplatform_compile")
pytestmark = pytest.mark.slow
BUILDS = {"tiny_sd_vae": ("vae_decode", "vae", {"batch_size": [1, 2], "resolution": [32, 32]}),
          # compiled for real: 2 images of 32 x 32, as generate() makes
          "tiny_sd_vae_aoti": ("vae_decode", "vae", {"batch_size": [2, 2], "resolution": [32, 32]},
                               "aot_inductor"),
          "tiny_sd_text": ("clip_text", "text_encoder", {"batch_size": [1, 2]}),
          # batch 4: 2 images x classifier-free guidance; the tiny VAE has 2 px per latent
          "tiny_sd_unet": ("unet", "unet", {"batch_size": [1, 4], "resolution": [32, 32],
                                            "sequence_length": 77, "vae_scale_factor": 2})}


@pytest.fixture(scope="module")
def compiled_manager(tiny_models, tiny_sd, tmp_path_factory):
    models, sd_catalog = tiny_sd
    root = tmp_path_factory.mktemp("compiled")
    entries = []
    for name, (builder, subfolder, ranges, *backend) in BUILDS.items():
        result = compile_api.build(
            builder, backend[0] if backend else "eager", hf_hub=str(models / "tiny_sd"),
            model_kwargs={"subfolder": subfolder}, build_kwargs=ranges, dtype="float32",
            device="cpu", cache_dir=str(root / "cache"), benchmark_runs=0, verify=backend != [])
        shutil.copytree(result.artifact_dir, models / name)
        entries.append({"name": name, "type": "compiled", "licence": "test",
                        "config": {"pipeline": "tiny_sd"}, "files": file_entries(models / name)})
    write_catalog(root / "catalog", "compiled", entries)
    manager = ModelManager(models, catalog_dirs=[tiny_models[1], sd_catalog, root / "catalog"])
    yield manager
    manager.unload_all()


class Counted:
    """The loaded CompiledModule, recording the shape of input `key` in every call."""

    def __init__(self, module, key):
        self.module, self.key, self.calls = module, key, []

    def __getattr__(self, name):
        return getattr(self.module, name)

    def __call__(self, **inputs):
        self.calls.append(tuple(inputs[self.key].shape))
        return self.module(**inputs)


def generate(manager, out, **options):
    ctx = TaskContext(manager=manager, model="tiny_sd", device="cpu", dtype="float32", seed=0,
                      output_dir=out)
    result = Txt2ImgTask().run(ctx, Txt2ImgTaskConfig(
        prompt="a cat", steps=2, width=32, height=32, images_per_prompt=2, seed=5, **options))
    return [np.asarray(Image.open(r["output"])).astype(np.int16) for r in result["images"]], result


def test_swapped_pipeline_matches_eager(compiled_manager, tmp_path):
    counted = {}
    for name, key in (("tiny_sd_vae", "latent"), ("tiny_sd_unet", "sample")):
        component = compiled_manager.load(name, device="cpu")
        component.module = counted[name] = Counted(component.module, key)
    eager, _ = generate(compiled_manager, tmp_path / "eager", output_prefix="eager_")
    names = ["tiny_sd_vae", "tiny_sd_text", "tiny_sd_unet"]
    fast, result = generate(compiled_manager, tmp_path / "fast", output_prefix="fast_",
                            compiled=names)
    assert counted["tiny_sd_vae"].calls[0][0] == 2  # the compiled decoder decoded both images
    # the compiled UNet ran every denoising call (PNDM: 2 steps are 3 calls) on both images and
    # their unconditional twins
    assert counted["tiny_sd_unet"].calls == [(4, 4, 16, 16)] * 3
    assert result["images"][0]["compiled"] == names
    for a, b in zip(eager, fast, strict=True):
        assert np.abs(a - b).max() <= 1 and a.std() > 1
    sd = compiled_manager.load("tiny_sd", device="cpu")
    assert "decode" not in vars(sd.pipeline.vae) and "forward" not in vars(sd.pipeline.text_encoder)
    assert "forward" not in vars(sd.pipeline.unet)


def test_an_aot_inductor_decoder_in_the_pipeline_matches_eager(compiled_manager, tmp_path):
    """A real AOTInductor package (model.pt2, C++ kernels) of the pipeline's own VAE decoder,
    loaded from the catalog without the model's Python class and decoding both images."""
    component = compiled_manager.load("tiny_sd_vae_aoti", device="cpu")
    assert component.module.manifest["backend"]["name"] == "aot_inductor"
    component.module = counted = Counted(component.module, "latent")
    eager, _ = generate(compiled_manager, tmp_path / "eager", output_prefix="eager_")
    fast, result = generate(compiled_manager, tmp_path / "fast", output_prefix="fast_",
                            compiled=["tiny_sd_vae_aoti"])
    assert counted.calls == [(2, 4, 16, 16)]
    assert result["images"][0]["compiled"] == ["tiny_sd_vae_aoti"]
    for a, b in zip(eager, fast, strict=True):
        assert np.abs(a - b).max() <= 1 and a.std() > 1


def test_compiled_models_are_checked(compiled_manager, tmp_path):
    with pytest.raises(ConfigError, match="is not a compiled model"):
        generate(compiled_manager, tmp_path, compiled=["tiny_clip"])
    with pytest.raises(ConfigError, match="replace the same component"):
        generate(compiled_manager, tmp_path, compiled=["tiny_sd_vae", "tiny_sd_vae"])


def test_compiled_unet_refuses_conditioning_it_was_not_built_for(compiled_manager):
    import torch
    from mlplatform_managers.types.compiled import swapped

    sd = compiled_manager.load("tiny_sd", device="cpu")
    unet = compiled_manager.load("tiny_sd_unet", device="cpu")
    sample, text = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 32)
    with swapped(sd, "tiny_sd", [unet]):
        out = sd.pipeline.unet(sample, torch.tensor(10), encoder_hidden_states=text,
                               return_dict=False)[0]
        with pytest.raises(ConfigError, match="the pipeline passed timestep_cond"):
            sd.pipeline.unet(sample, 10, encoder_hidden_states=text, timestep_cond=sample)
    with torch.inference_mode():
        eager = sd.pipeline.unet(sample, torch.tensor(10), encoder_hidden_states=text).sample
    assert out.shape == eager.shape and torch.allclose(out, eager, atol=1e-5)
