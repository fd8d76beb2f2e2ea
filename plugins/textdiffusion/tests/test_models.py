"""VAE / DDPM / VAE_DDPM on tiny connectors, corpora and the length policy, and resume."""

from __future__ import annotations

import json

import pytest
import torch
from mlplatform_textdiffusion import (
    DDPM,
    MODEL_CLASS,
    VAE,
    VAE_DDPM,
    MLPSkipNet,
    TextCodec,
    load_corpus,
    train,
)
from mlplatform_textdiffusion.testing import make_tokenizer, tiny_bert_config, tiny_gpt2_config

from mlplatform.api import ConfigError

LATENT = 8


def tiny_vae(**kwargs):
    torch.manual_seed(0)
    encoder = MODEL_CLASS["BertForLatentConnector"](config=tiny_bert_config(), latent_size=LATENT)
    decoder = MODEL_CLASS["GPT2ForLatentConnector"](config=tiny_gpt2_config(), latent_size=LATENT)
    return VAE(encoder, decoder, LATENT, **kwargs)


def batch(sentences=("the cat sees a dog", "a big man likes the red bird", "the dog finds")):
    codec = TextCodec(make_tokenizer(), make_tokenizer(), max_length=16)
    return (*codec.encoder_batch(list(sentences)), *codec.decoder_batch(list(sentences)))


def test_vae_loss_includes_the_kl():
    inputs, imask, labels, lmask = batch()
    for weight in (0.0, 0.5):
        vae = tiny_vae(kl_weight=weight)
        torch.manual_seed(1)
        loss_rec, loss_kl, loss, z, mu = vae(inputs, labels, imask, lmask)
        assert loss_rec.shape == loss_kl.shape == loss.shape == (3,)
        assert z.shape == mu.shape == (3, LATENT)
        assert torch.allclose(loss, loss_rec + weight * loss_kl)
        assert bool((loss_kl > 0).all())


def test_free_bits_stop_pushing_small_kl_dimensions_down():
    vae = tiny_vae(free_bits=10.0)  # far above every dimension's KL: the KL has no gradient
    mu = torch.zeros(4, LATENT, requires_grad=True)
    logvar = torch.full((4, LATENT), -0.1, requires_grad=True)
    term = vae.kl_term(vae.kl_per_dim(mu, logvar))
    assert torch.allclose(term, torch.full((4,), 10.0 * LATENT))
    term.sum().backward()
    assert logvar.grad.abs().sum() == 0
    vae.free_bits = 0.0
    vae.kl_term(vae.kl_per_dim(mu, logvar)).sum().backward()
    assert logvar.grad.abs().sum() > 0


def test_fixed_posterior_variance():
    inputs, imask, *_ = batch()
    vae = tiny_vae(posterior_logvar=-4.0)
    mu, logvar = vae.encode(inputs, imask)
    assert torch.equal(logvar, torch.full_like(mu, -4.0))
    z = vae.reparameterise(mu, logvar, nsamples=500)
    assert z.shape == (3, 500, LATENT)
    assert (z - mu[:, None]).std().item() == pytest.approx(torch.exp(torch.tensor(-2.0)).item(), rel=0.1)


def test_vae_ddpm_loss_is_reconstruction_plus_alpha_ddpm():
    inputs, imask, labels, lmask = batch()
    ddpm = DDPM(MLPSkipNet(LATENT, hidden_dim=16, num_layers=2), (1e-4, 0.02), 100)
    model = VAE_DDPM(tiny_vae(), ddpm, ddpm_weight=2.5)
    torch.manual_seed(3)
    loss_rec, loss_kl, total, z, mu, ddpm_loss, t = model(inputs, labels, imask, lmask)
    torch.manual_seed(3)
    _, _, vae_loss, z2, _ = model.model_vae(inputs, labels, imask, lmask)
    assert torch.allclose(total, vae_loss.mean() + 2.5 * ddpm_loss.mean())
    total.backward()
    assert model.model_vae.encoder.to_posterior.weight.grad.abs().sum() > 0
    assert model.ddpm.eps_model.out.weight.grad.abs().sum() > 0


def test_vae_refuses_connectors_of_another_latent_size():
    encoder = MODEL_CLASS["BertForLatentConnector"](config=tiny_bert_config(), latent_size=4)
    decoder = MODEL_CLASS["GPT2ForLatentConnector"](config=tiny_gpt2_config(), latent_size=8)
    with pytest.raises(ConfigError, match="latent sizes disagree"):
        VAE(encoder, decoder, 8)


# --- corpora and lengths ----------------------------------------------------------------------


def test_corpus_text_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("the cat sees\n\n  a dog finds  \n")
    assert load_corpus(tmp_path / "a.txt") == ["the cat sees", "a dog finds"]
    (tmp_path / "b.jsonl").write_text(json.dumps({"body": "the cat sees"}) + "\n" + json.dumps({"body": "x"}) + "\n")
    assert load_corpus(tmp_path / "b.jsonl", text_key="body") == ["the cat sees", "x"]
    with pytest.raises(ConfigError, match="no string field 'text'"):
        load_corpus(tmp_path / "b.jsonl")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ConfigError, match="no sentences"):
        load_corpus(tmp_path / "empty.txt")
    with pytest.raises(ConfigError, match="does not exist"):
        load_corpus(tmp_path / "missing.txt")


def test_too_long_sentences_truncate_with_a_warning_or_refuse(caplog):
    long = " ".join(["the cat sees a dog"] * 5)  # 25 words
    codec = TextCodec(make_tokenizer(), make_tokenizer(), max_length=10, too_long="truncate")
    with caplog.at_level("WARNING"):
        codec.check_lengths([long, "the cat sees"])
    assert "1 sentence(s) longer than max_length=10" in caplog.text
    ids, mask = codec.decoder_batch([long])
    assert ids.shape == (1, 12)  # bos + 10 + eos
    refusing = TextCodec(make_tokenizer(), make_tokenizer(), max_length=10, too_long="refuse")
    with pytest.raises(ConfigError, match="exceed max_length=10"):
        refusing.check_lengths(["the cat sees", long])


# --- checkpoints ------------------------------------------------------------------------------


def options(tiny_models, corpus, **extra):
    bert, gpt2 = tiny_models
    base = {
        "name": "text_diffusion", "corpus": str(corpus), "steps": 6, "batch_size": 8, "lr": 1e-3,
        "log_every": 2, "progress": False,
        "vae": {"encoder": {"connector": "BertForLatentConnector", "source": str(bert)},
                "decoder": {"connector": "GPT2ForLatentConnector", "source": str(gpt2)},
                "latent_size": LATENT, "max_length": 16, "kl_anneal_steps": 4, "free_bits": 0.1},
        "diffusion": {"n_T": 50, "hidden_dim": 16, "num_layers": 2, "ema_decay": 0.9},
    }
    base.update(extra)
    return base


@pytest.mark.slow
def test_resume_equals_an_uninterrupted_run(tiny_models, grammar_corpus, tmp_path):
    from safetensors.torch import load_file

    straight = train(options(tiny_models, grammar_corpus), tmp_path / "straight", device="cpu", seed=3)
    first = train(options(tiny_models, grammar_corpus, steps=3), tmp_path / "first", device="cpu", seed=3)
    ckpt = first.checkpoint_dir / "step_0000003"
    resumed = train(options(tiny_models, grammar_corpus, resume=str(ckpt)), tmp_path / "second", device="cpu", seed=3)
    assert resumed.metrics["resumed_from_step"] == 3
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(straight.model_dir / name), load_file(resumed.model_dir / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    # the interrupted run also logged its last step (3); every other record is identical
    assert [h for h in resumed.metrics["history"] if h["step"] != 3] == straight.metrics["history"]


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_another_configuration(tiny_models, grammar_corpus, tmp_path):
    first = train(options(tiny_models, grammar_corpus, steps=2), tmp_path / "a", device="cpu")
    ckpt = first.checkpoint_dir / "step_0000002"
    with pytest.raises(ConfigError, match="another configuration: .*lr"):
        train(options(tiny_models, grammar_corpus, lr=5e-4, resume=str(ckpt)), tmp_path / "b", device="cpu")
