"""Length-bucketed chunks give the padded batch's embeddings; GradCache gives the uncached
gradients (dropout off), with hard negatives, a learnable temperature, Matryoshka and
distillation; the trainer runs with GradCache and a teacher; the TensorBoard tracker."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from mlplatform_embeddings import Pair, build_model, train
from mlplatform_embeddings.batching import tokenize_chunks
from mlplatform_embeddings.gradcache import grad_cache_backward
from mlplatform_embeddings.losses import build_loss
from mlplatform_embeddings.training import ContrastiveModel, PairCollator, teacher_embeddings

from mlplatform.api import ConfigError


def _no_dropout(module):
    for layer in module.modules():
        if isinstance(layer, torch.nn.Dropout):
            layer.p = 0.0
        if hasattr(layer, "dropout_prob"):  # attention dropout passed to the attention kernel
            layer.dropout_prob = 0.0
    return module.train()


def _pairs(make_pairs, n=10):
    rows = make_pairs(n, seed=7, words=3)
    long = make_pairs(n, seed=8, words=9)  # longer documents: chunks of different widths
    return [Pair(r["query"], lg["positive"] if i % 2 else r["positive"], (long[-1 - i]["positive"],))
            for i, (r, lg) in enumerate(zip(rows, long, strict=True))]


def test_bucketed_chunks_equal_one_padded_batch_and_compute_fewer_tokens(tiny_bert, make_pairs):
    encoder = build_model({"model_name": str(tiny_bert)}).eval()
    texts = [t for p in _pairs(make_pairs) for t in (p.query, p.positive)]
    padded = encoder.tokenize(texts)
    chunks = tokenize_chunks(encoder.tokenizer, texts, encoder.max_seq_length, overhead=4)
    assert len(chunks.inputs) > 1 and chunks.tokens < padded["input_ids"].numel()
    module = ContrastiveModel(encoder, build_loss("infonce"))
    with torch.no_grad():
        assert torch.allclose(module.embed(chunks), encoder(**padded), atol=1e-5)
        assert torch.allclose(encoder.encode(texts, batch_size=3), encoder(**padded), atol=1e-5)


def _gradients(module):
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("kind", ["kl", "mse"])
def test_grad_cache_gradients_equal_uncached(tiny_bert, other_bert, make_pairs, kind):
    torch.manual_seed(0)
    encoder = build_model({"model_name": str(tiny_bert), "projection_dim": 24})
    teacher = build_model({"model_name": str(other_bert)}).eval()
    loss = build_loss("infonce", temperature=0.1, learnable_temperature=True, matryoshka_dims=[8])
    module = _no_dropout(ContrastiveModel(
        encoder, loss, {"kind": kind, "weight": 0.5, "temperature": 0.1}))
    pairs = _pairs(make_pairs)
    texts = {"query_texts": [p.query for p in pairs],
             "document_texts": [p.positive for p in pairs] + [n for p in pairs for n in p.negatives]}
    targets = teacher_embeddings(teacher, texts, "cpu")

    whole = PairCollator(encoder)(pairs)
    assert len(whole["texts"].inputs) <= 2
    uncached_loss = module(**whole, teacher_embeddings=targets)
    uncached_loss.backward()
    uncached = _gradients(module)

    AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=True)
    small = PairCollator(encoder, max_rows=3)(pairs)
    assert len(small["texts"].inputs) >= 10  # 30 texts in chunks of at most 3
    cached_loss = grad_cache_backward(module, module, {**small, "teacher_embeddings": targets}, accelerator)
    cached = _gradients(module)

    assert torch.allclose(cached_loss, uncached_loss.detach(), rtol=1e-5)
    assert cached.keys() == uncached.keys() and "loss.base.log_scale" in cached
    for name, grad in uncached.items():
        assert grad.abs().sum() > 0 or name.startswith("encoder.backbone.embeddings"), name
        assert torch.allclose(cached[name], grad, rtol=1e-4, atol=1e-6), name


@pytest.mark.slow
def test_trainer_runs_grad_cache_with_distillation(tiny_bert, other_bert, tmp_path, make_pairs, jsonl):
    data = jsonl(tmp_path / "train.jsonl", make_pairs(96))
    summary = train({
        "model": {"model_name": str(tiny_bert), "teacher_model_name": str(other_bert)},
        "data": {"train_file": str(data), "validation_split": 0.25},
        "loss": {"distillation_loss": "kl"},
        "optim": {"learning_rate": 1e-3},
        "batch_size": 24, "grad_cache": True, "grad_cache_chunk_size": 8, "max_steps": 3,
        "log_every": 1, "export": False, "output_dir": str(tmp_path / "run"),
    }, seed=0, device="cpu")
    assert summary["steps"] == 3 and all(h["loss"] > 0 for h in summary["history"])


@pytest.mark.slow
def test_tensorboard_tracker_gets_the_loss_and_evaluations(tiny_bert, tmp_path, make_pairs, jsonl):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = jsonl(tmp_path / "train.jsonl", make_pairs(48))
    train({"model": {"model_name": str(tiny_bert)},
           "data": {"train_file": str(data), "validation_split": 0.25},
           "batch_size": 12, "max_steps": 2, "log_every": 1, "export": False,
           "log_with": ["tensorboard"], "output_dir": str(tmp_path / "run")}, seed=0, device="cpu")
    events = list((tmp_path / "run" / "trackers").rglob("events.out.tfevents.*"))
    assert events
    tags = set()
    for event in events:
        accumulator = EventAccumulator(str(event.parent))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/lr", "eval/ndcg@10"} <= tags, tags
    with pytest.raises(ConfigError, match="accelerate refused|not available"):
        train({"model": {"model_name": str(tiny_bert)}, "data": {"train_file": str(data)},
               "batch_size": 12, "log_with": ["nosuch"], "output_dir": str(tmp_path / "bad")}, device="cpu")
