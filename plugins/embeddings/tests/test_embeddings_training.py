"""Training on accelerate with a tiny real BERT: learning shows, resume equals uninterrupted,
the export loads in sentence-transformers and through the embed task with equal embeddings."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from mlplatform_embeddings import embed, load_exported, train
from mlplatform_embeddings.plugin import _run_embed_task
from omegaconf import OmegaConf

from mlplatform.api import ArtifactError, ConfigError

pytestmark = pytest.mark.slow  # trains tiny real models (about 25 s on 2 cores)


def _config(model_dir, train_file, out, **overrides):
    config = {
        "model": {"model_name": str(model_dir)},
        "data": {"train_file": str(train_file), "validation_split": 0.25},
        "optim": {"learning_rate": 1e-3, "scheduler": "cosine", "warmup_steps": 2},
        "batch_size": 16,
        "output_dir": str(out),
    }
    for key, value in overrides.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory, make_pairs, jsonl):
    root = tmp_path_factory.mktemp("learn")
    data = jsonl(root / "train.jsonl", make_pairs(200))
    summary = train(_config(tiny_bert, data, root / "run", epochs=8,
                            model={"projection_dim": 32},
                            loss={"learnable_temperature": True}), seed=0, device="cpu")
    return summary


def test_learning_lifts_ndcg_from_chance(trained):
    before, after = trained["evaluations"][0], trained["evaluations"][-1]
    assert (before["label"], after["label"]) == ("before", "after")
    assert before["queries"] == 50 and before["ndcg@10"] < 0.2  # chance is about 0.06
    assert after["ndcg@10"] > 0.6 and after["recall@10"] > 0.8
    assert trained["temperature"] != pytest.approx(0.05)  # the learnable temperature was trained


def test_metrics_json_and_curve_in_the_output_dir(trained):
    out = trained["output_dir"]
    metrics = json.loads(open(f"{out}/metrics.json").read())
    assert metrics["steps"] == trained["steps"] == 72 and metrics["history"]
    assert open(f"{out}/training_curve.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_export_loads_in_sentence_transformers_and_the_embed_task(trained, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    model_dir = trained["model_dir"]
    texts = ["q1 q2 q3", "d4 d5 d6 d7", "q9"]
    ours = load_exported(model_dir).encode(texts)
    theirs = SentenceTransformer(model_dir, device="cpu").encode(texts, convert_to_tensor=True)
    assert ours.shape == (3, 32)
    assert torch.allclose(ours, theirs.cpu(), atol=1e-5)
    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.create({"device": "cpu", "task": {"name": "embed", "model_dir": model_dir}})
    from mlplatform_embeddings.schemas import EmbedTaskConfig

    cfg.task = OmegaConf.merge(OmegaConf.structured(EmbedTaskConfig), {"model_dir": model_dir, "texts": texts})
    result = _run_embed_task(cfg)
    assert result["dimension"] == 32 and result["texts"] == texts
    assert np.allclose(np.array(result["embeddings"]), ours.numpy(), atol=1e-6)
    assert np.allclose(np.load(tmp_path / "embeddings.npy"), ours.numpy(), atol=1e-6)


def test_a_damaged_export_is_refused(trained, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(trained["model_dir"], copy)
    with open(copy / "1_Pooling" / "config.json", "a") as handle:
        handle.write(" ")
    with pytest.raises(ArtifactError):
        embed(copy, ["q1"])


def test_lora_export_is_merged_and_equal(tiny_bert, tmp_path, make_pairs, jsonl):
    data = jsonl(tmp_path / "train.jsonl", make_pairs(64))
    summary = train(_config(tiny_bert, data, tmp_path / "run", max_steps=3, eval_before=False,
                            model={"use_lora": True, "lora_r": 4, "pooling": "cls"},
                            loss={"matryoshka_dims": [16, 32]},
                            optim={"mixed_precision": "bf16"}), device="cpu")
    assert summary["mixed_precision"] == "bf16"  # reached the Accelerator
    manifest = json.loads(open(f"{summary['model_dir']}/manifest.json").read())
    assert manifest["lora_merged"] is True and manifest["pooling"] == "cls"
    assert manifest["matryoshka_dims"] == [16, 32]
    from sentence_transformers import SentenceTransformer

    texts = ["q1 q2", "d3 d4"]
    theirs = SentenceTransformer(summary["model_dir"], device="cpu").encode(texts, convert_to_tensor=True)
    assert torch.allclose(load_exported(summary["model_dir"]).encode(texts), theirs.cpu(), atol=1e-5)


def test_resume_equals_uninterrupted(tiny_bert, tmp_path, make_pairs, jsonl):
    data = jsonl(tmp_path / "train.jsonl", make_pairs(80))
    options = dict(max_steps=6, checkpoint_every=2, eval_before=False, eval_after=False, export=False,
                   batch_size=8, optim={"gradient_accumulation_steps": 2},
                   loss={"learnable_temperature": True})
    full = train(_config(tiny_bert, data, tmp_path / "full", **options), seed=5, device="cpu")
    # a run killed after step 4 leaves checkpoints/step-000002 and step-000004 (as the full run did)
    killed = tmp_path / "killed"
    (killed / "checkpoints").mkdir(parents=True)
    for step in ("step-000002", "step-000004"):
        shutil.copytree(tmp_path / "full" / "checkpoints" / step, killed / "checkpoints" / step)
    resumed = train(_config(tiny_bert, data, killed, resume_from="latest", **options), seed=5, device="cpu")
    assert resumed["resumed_from"].endswith("step-000004") and resumed["steps"] == 6
    from safetensors.torch import load_file

    a = load_file(f"{full['checkpoint']}/model.safetensors")
    b = load_file(f"{resumed['checkpoint']}/model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in full["history"]] == [h["loss"] for h in resumed["history"]]
    other_batch = {**options, "batch_size": 4}
    with pytest.raises(ConfigError, match="data layout"):
        train(_config(tiny_bert, data, killed, resume_from="latest", **other_batch), seed=5, device="cpu")
    _tampered_checkpoints_are_refused_before_unpickling(
        killed / "checkpoints" / "step-000004",
        lambda checkpoint: train(_config(tiny_bert, data, tmp_path / "again", resume_from=str(checkpoint),
                                         **options), seed=5, device="cpu"))


class _Marker:
    """Unpickling this writes a file: proof that a pickle was loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _tampered_checkpoints_are_refused_before_unpickling(checkpoint, resume):
    files = {p.name for p in checkpoint.iterdir()}
    assert {"model.safetensors", "optimizer.bin", "manifest.json"} <= files
    assert not any(name.startswith("custom_checkpoint") for name in files)  # no weights_only=False load
    marker = checkpoint.parent / "unpickled"
    original = (checkpoint / "optimizer.bin").read_bytes()
    (checkpoint / "optimizer.bin").write_bytes(pickle.dumps(_Marker(marker)))  # altered
    with pytest.raises(ArtifactError, match="optimizer.bin"):
        resume(checkpoint)
    (checkpoint / "optimizer.bin").write_bytes(original)
    (checkpoint / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_Marker(marker)))  # added
    with pytest.raises(ArtifactError, match="custom_checkpoint_0.pkl, which its manifest does not list"):
        resume(checkpoint)
    (checkpoint / "custom_checkpoint_0.pkl").unlink()
    (checkpoint / "manifest.json").rename(checkpoint / "manifest.moved")  # not one of ours
    with pytest.raises(ArtifactError, match="no manifest.json"):
        resume(checkpoint)
    assert not marker.exists()


def test_resume_from_a_checkpoint_of_another_model(tiny_bert, other_bert, tmp_path, make_pairs, jsonl):
    data = jsonl(tmp_path / "train.jsonl", make_pairs(40))
    small = dict(max_steps=1, eval_before=False, eval_after=False, export=False)
    first = train(_config(other_bert, data, tmp_path / "a", **small), device="cpu")
    with pytest.raises(ConfigError, match="different model"):
        train(_config(tiny_bert, data, tmp_path / "b", resume_from=first["checkpoint"], **small),
              device="cpu")


def test_bad_sizes_are_clear_errors(tiny_bert, tmp_path, make_pairs, jsonl):
    data = jsonl(tmp_path / "train.jsonl", make_pairs(10))
    with pytest.raises(ConfigError, match="batch_size=16 is larger than the training set"):
        train(_config(tiny_bert, data, tmp_path / "run", data={"validation_split": 0.0}), device="cpu")
    with pytest.raises(ConfigError, match="below the embedding size 64"):
        train(_config(tiny_bert, data, tmp_path / "run", batch_size=4, loss={"matryoshka_dims": [64]}),
              device="cpu")
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        train({**_config(tiny_bert, data, tmp_path / "run"), "batch_sise": 2}, device="cpu")


def test_distillation_narrows_the_student_teacher_gap(trained, tiny_bert, tmp_path, make_pairs, jsonl):
    from mlplatform_embeddings import build_model

    teacher_dir = trained["model_dir"]  # the model trained above (an exported ST directory)
    data = jsonl(tmp_path / "train.jsonl", make_pairs(64, seed=7))
    probe = [p["query"] for p in make_pairs(20, seed=99)] + [p["positive"] for p in make_pairs(20, seed=99)]
    teacher = load_exported(teacher_dir)
    target = teacher.encode(probe) @ teacher.encode(probe).T

    def gap(model):
        emb = model.encode(probe)
        return float((emb @ emb.T - target).abs().mean())

    def run(out, **options):
        return train(_config(tiny_bert, data, tmp_path / out, max_steps=16, eval_before=False,
                             eval_after=False, data={"validation_split": 0.0}, batch_size=8,
                             **options), device="cpu")

    before = gap(build_model({"model_name": str(tiny_bert)}))
    summary = run("distilled", model={"teacher_model_name": teacher_dir},
                  loss={"distillation_loss": "mse", "distillation_weight": 50.0})
    assert summary["teacher_model_name"] == teacher_dir
    after = gap(load_exported(summary["model_dir"]))
    without_teacher = gap(load_exported(run("plain")["model_dir"]))
    assert after < 0.7 * before and after < 0.8 * without_teacher, (before, after, without_teacher)
