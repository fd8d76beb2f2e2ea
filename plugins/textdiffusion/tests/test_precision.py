"""fp32 / bf16 / fp16 sampling on CPU through the pipeline (weights cast, sampler arithmetic in
float64, token choice in float32). CUDA autocast and fp16 training are not exercised here."""

from __future__ import annotations

import pytest
import torch
from mlplatform_textdiffusion import (
    TextDiffusionPipeline,
    TextDiffusionTrainerConfig,
    build_model,
    save_artifact,
)
from mlplatform_textdiffusion.build import load_artifact, make_codec

from mlplatform.api import from_options


@pytest.fixture(scope="module")
def random_model_dir(tiny_models, grammar_corpus, tmp_path_factory):
    """An exported model with random weights (dtype paths need no training)."""
    bert, gpt2 = tiny_models
    options = from_options(TextDiffusionTrainerConfig, {
        "name": "text_diffusion", "corpus": str(grammar_corpus),
        "vae": {"encoder": {"connector": "BertForLatentConnector", "source": str(bert)},
                "decoder": {"connector": "GPT2ForLatentConnector", "source": str(gpt2)},
                "latent_size": 8, "max_length": 16},
        "diffusion": {"n_T": 100, "hidden_dim": 32, "num_layers": 2},
    }, "trainer")
    torch.manual_seed(0)
    model = build_model(options)
    return save_artifact(tmp_path_factory.mktemp("random") / "model", model, make_codec(options), options,
                         step=0, kind="model")


def _cpu_supports(dtype) -> bool:
    try:
        torch.nn.functional.linear(torch.ones(2, 4, dtype=dtype), torch.ones(3, 4, dtype=dtype))
        return True
    except RuntimeError:
        return False


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_sampling_tracks_float32(random_model_dir, dtype):
    if not _cpu_supports(dtype):
        pytest.skip(f"this CPU build has no {dtype} linear kernels")
    ref = TextDiffusionPipeline.from_pretrained(random_model_dir, device="cpu")
    # the constructor takes any torch dtype; from_pretrained applies the core's policy (fp16 on CPU -> fp32)
    low = TextDiffusionPipeline(load_artifact(random_model_dir), torch.device("cpu"), dtype=dtype)
    assert all(p.dtype == dtype for p in low.model.parameters())
    z_ref = ref.sample_latents(16, steps=20, generator=torch.Generator().manual_seed(0))
    z_low = low.sample_latents(16, steps=20, generator=torch.Generator().manual_seed(0))
    assert z_low.dtype == torch.float32 and torch.isfinite(z_low).all()
    assert (z_low - z_ref).norm() / z_ref.norm() < 0.05  # same trajectory up to rounding
    texts, _ = low.sample(4, steps=10, decoding=None, seed=1)
    recon, mu = low.reconstruct(["the cat sees a dog", "a big man likes the red bird"])
    assert len(texts) == 4 and len(recon) == 2 and mu.dtype == dtype
    # the decoder's logits at bf16/fp16 stay close to float32's for the same latent
    ids = torch.tensor([[4, 6, 14]])
    logits_ref, _ = ref.model.model_vae.decoder(ids, z_ref[:1])
    logits_low, _ = low.model.model_vae.decoder(ids, z_ref[:1])
    assert torch.allclose(logits_low.float(), logits_ref, atol=0.1, rtol=0.05)


def test_from_pretrained_follows_the_core_dtype_policy(random_model_dir):
    bf16 = TextDiffusionPipeline.from_pretrained(random_model_dir, device="cpu", dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    fp16_on_cpu = TextDiffusionPipeline.from_pretrained(random_model_dir, device="cpu", dtype="float16")
    assert fp16_on_cpu.dtype == torch.float32  # the core falls back on CPU, with a warning
