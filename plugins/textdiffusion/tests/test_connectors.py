"""Connectors: DMLP's 15 MODEL_CLASS names on tiny random configs, the decoder's use of the
latent, KV-cached decoding, and connector errors."""

from __future__ import annotations

import pytest
import torch
from mlplatform_textdiffusion import CONNECTORS, MODEL_CLASS, GPT2LatentDecoder
from mlplatform_textdiffusion.testing import VOCAB, tiny_bert_config, tiny_gpt2_config

from mlplatform.api import ConfigError, MLPlatformError, get_registry

LATENT = 8


def tiny_config(family: str):
    import transformers as tf

    small = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=64)
    if family == "bert":
        return tiny_bert_config()
    if family == "roberta":
        return tf.RobertaConfig(**small, max_position_embeddings=42, pad_token_id=1)
    if family == "deberta":
        return tf.DebertaConfig(**small, max_position_embeddings=40)
    if family == "albert":
        return tf.AlbertConfig(**small, embedding_size=16, max_position_embeddings=40)
    if family == "t5":
        return tf.T5Config(vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2)
    return tiny_gpt2_config()


def family_of(name: str) -> str:
    for family in ("bert", "roberta", "deberta", "albert", "t5", "gpt2"):
        if name.lower().startswith(family):
            return family
    raise AssertionError(name)


def test_all_fifteen_names_are_registered():
    registry = get_registry()
    names = set(registry.names("vae_encoder")) | set(registry.names("vae_decoder"))
    assert len(CONNECTORS) == 15 and set(CONNECTORS) <= names and set(MODEL_CLASS) == set(CONNECTORS)


@pytest.mark.parametrize("name", sorted(CONNECTORS))
def test_every_connector_builds_runs_forward_and_backward(name):
    torch.manual_seed(0)
    spec = CONNECTORS[name]
    kind = "vae_encoder" if spec.role == "encoder" else "vae_decoder"
    module = get_registry().get(kind, name)(config=tiny_config(family_of(name)), latent_size=LATENT)
    ids = torch.randint(6, VOCAB, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    if spec.role == "encoder":
        mu, logvar = module(ids, mask)
        assert mu.shape == logvar.shape == (3, LATENT)
        (mu.sum() + logvar.sum()).backward()
    else:
        z = torch.randn(3, LATENT, requires_grad=True)
        loss = module.reconstruction_loss(ids, z, mask)
        assert loss.shape == (3,) and bool(torch.isfinite(loss).all())
        loss.sum().backward()
        assert z.grad is not None and z.grad.abs().sum() > 0
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > len(grads) // 2


def make_decoder(injection="both", initializer_range=None):
    """A tiny random decoder; a large initializer_range makes greedy rows vary their tokens
    (at the default scale each row repeats one token), so rows reach a given eos at different steps."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    config = tiny_gpt2_config()
    if initializer_range is not None:
        config.initializer_range = initializer_range
    return GPT2LatentDecoder(GPT2LMHeadModel(config), LATENT, injection).eval()


@pytest.mark.parametrize("injection", ["both", "embedding", "memory"])
def test_the_latent_changes_the_logits_and_receives_gradients(injection):
    decoder = make_decoder(injection)
    ids = torch.randint(6, VOCAB, (2, 6))
    z1 = torch.randn(2, LATENT, requires_grad=True)
    z2 = torch.randn(2, LATENT)
    logits1, _ = decoder(ids, z1)
    logits2, _ = decoder(ids, z2)
    assert not torch.allclose(logits1, logits2, atol=1e-4)
    logits1.logsumexp(-1).sum().backward()
    assert z1.grad.abs().sum() > 0
    layer = decoder.latent_memory if injection != "embedding" else decoder.latent_embedding
    assert layer.weight.grad.abs().sum() > 0


def test_both_injection_paths_are_used():
    """Zeroing the memory projection, or the embedding projection, each changes the logits."""
    decoder = make_decoder("both")
    ids, z = torch.randint(6, VOCAB, (2, 5)), torch.randn(2, LATENT)
    base, _ = decoder(ids, z)
    for layer in (decoder.latent_memory, decoder.latent_embedding):
        saved = layer.weight.detach().clone(), layer.bias.detach().clone()
        with torch.no_grad():
            layer.weight.zero_()
            layer.bias.zero_()
        changed, _ = decoder(ids, z)
        assert not torch.allclose(base, changed, atol=1e-5)
        with torch.no_grad():
            layer.weight.copy_(saved[0])
            layer.bias.copy_(saved[1])


@pytest.mark.parametrize("strategy", ["greedy", "top_k", "top_p"])
@pytest.mark.parametrize("injection", ["both", "embedding"])
def test_kv_cached_decoding_equals_full_recomputation(strategy, injection):
    decoder = make_decoder(injection)
    z = torch.randn(4, LATENT)
    runs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(7)
        runs.append(decoder.generate(z, bos_id=4, eos_id=5, max_new_tokens=12, strategy=strategy, top_k=5,
                                     top_p=0.8, generator=g, use_cache=use_cache, return_logits=True))
    (tokens_a, logits_a), (tokens_b, logits_b) = runs
    assert tokens_a == tokens_b
    computed = ~logits_a.isnan()  # a row's steps up to its eos
    assert torch.equal(computed, ~logits_b.isnan()) and bool(computed[:, 0].all())
    assert torch.allclose(logits_a[computed], logits_b[computed], atol=1e-5)


def test_rows_finishing_early_decode_as_each_row_alone():
    """Finished rows leave the batch and the KV cache; the rows still live must not notice."""
    decoder = make_decoder("both", initializer_range=1.0)
    z = torch.randn(6, LATENT)
    free, _ = decoder.generate(z, bos_id=4, eos_id=-1, max_new_tokens=12)  # no eos: 12 tokens each

    def end(row, eos):
        return row.index(eos) if eos in row else len(row)

    # the eos that makes the rows stop at the most different steps (or never)
    eos = max(range(VOCAB), key=lambda t: len({end(row, t) for row in free}))
    assert len({end(row, eos) for row in free}) >= 3, "rows must finish at different steps"
    batched, logits = decoder.generate(z, bos_id=4, eos_id=eos, max_new_tokens=12, return_logits=True)
    assert batched == [row[: end(row, eos)] for row in free]
    for i, row in enumerate(batched):
        alone, alone_logits = decoder.generate(z[i:i + 1], bos_id=4, eos_id=eos, max_new_tokens=12,
                                               return_logits=True)
        assert alone == [row]
        steps = min(len(row) + 1, 12)  # the tokens and the eos step
        assert not logits[i, :steps].isnan().any() and logits[i, steps:].isnan().all()
        assert torch.allclose(logits[i, :steps], alone_logits[0, :steps], atol=1e-4)


def test_top_k_and_top_p_keep_only_their_tokens():
    from mlplatform_textdiffusion.connectors import pick_next_token

    logits = torch.tensor([[4.0, 3.0, 2.0, -5.0, -6.0]]).repeat(500, 1)
    g = torch.Generator().manual_seed(0)
    assert set(pick_next_token(logits, "top_k", 2, 1.0, 1.0, g).tolist()) == {0, 1}
    # softmax mass: 0.665, 0.245, 0.09, ...: top_p=0.8 keeps the first two
    assert set(pick_next_token(logits, "top_p", 0, 0.8, 1.0, g).tolist()) == {0, 1}
    assert pick_next_token(logits, "greedy", 0, 1.0, 1.0, g).unique().tolist() == [0]
    with pytest.raises(ConfigError, match="top_p"):
        pick_next_token(logits, "top_p", 0, 0.0, 1.0, g)


def test_unknown_connector_names_the_closest_match():
    with pytest.raises(MLPlatformError, match="BertForLatentConnector"):
        get_registry().get("vae_encoder", "BertForLatentConector")


def test_a_connector_refuses_another_model_family():
    with pytest.raises(ConfigError, match="expects a gpt2 model"):
        MODEL_CLASS["GPT2ForLatentConnector"](config=tiny_bert_config(), latent_size=LATENT)


def test_connectors_load_from_a_local_directory(tiny_models):
    bert, gpt2 = tiny_models
    encoder = MODEL_CLASS["BertForLatentConnectorAVG"](str(bert), latent_size=LATENT)
    decoder = MODEL_CLASS["GPT2ForLatentConnector"](str(gpt2), latent_size=LATENT)
    assert encoder.pooling == "mean" and decoder.injection == "both"
    assert encoder.backbone.config.hidden_size == 32
