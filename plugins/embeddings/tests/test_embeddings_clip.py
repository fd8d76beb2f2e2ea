"""Image-text (CLIP): a tiny CLIP trained on scikit-learn's bundled digits (images written to a
tmp dir, captions "a photo of the digit seven") goes from chance to well above it in zero-shot
classification; a collapsed model scores exactly chance; LoRA keeps the projections trainable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from mlplatform_embeddings import DataConfig, build_model, embed, load_exported, read_pairs, train
from mlplatform_embeddings.clip import ImagePath, zero_shot_accuracy
from mlplatform_embeddings.export import export_model
from mlplatform_embeddings.gradcache import grad_cache_backward
from mlplatform_embeddings.losses import build_loss
from mlplatform_embeddings.model_builder import apply_lora
from mlplatform_embeddings.training import ContrastiveModel, PairCollator, teacher_embeddings

from mlplatform.api import ConfigError

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def write_digits(root, count: int):
    """The first `count` digits as 8x8 RGB PNGs and a JSONL of {"caption", "image", "negative"}
    records (the negative: the next record's image, a hard-negative image)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    (root / "images").mkdir(parents=True)
    lines = []
    for i in range(count):
        pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
        Image.fromarray(pixels).convert("RGB").save(root / "images" / f"{i}.png")
        lines.append(json.dumps({"caption": f"a photo of the digit {DIGIT_WORDS[digits.target[i]]}",
                                 "image": f"images/{i}.png", "negative": f"images/{(i + 1) % count}.png"}))
    (root / "digits.jsonl").write_text("\n".join(lines) + "\n")
    return root / "digits.jsonl"


@pytest.mark.slow
def test_tiny_clip_on_digits_learns_zero_shot_classification(tiny_clip, tmp_path):
    data = write_digits(tmp_path, 600)
    summary = train({
        "model": {"model_name": str(tiny_clip)},
        "data": {"train_file": str(data), "validation_split": 0.25, "query_column": "caption",
                 "image_column": "image"},
        "loss": {"learnable_temperature": True},
        "optim": {"learning_rate": 3e-3, "scheduler": "cosine", "warmup_steps": 5},  # 36 steps
        "batch_size": 50, "epochs": 4, "log_every": 9, "output_dir": str(tmp_path / "run"),
    }, seed=0, device="cpu")
    before, after = summary["evaluations"][0], summary["evaluations"][-1]
    assert before["zero_shot_classes"] == 10 and before["zero_shot_accuracy"] < 0.25
    assert after["zero_shot_accuracy"] > 0.4, after  # chance is 0.1; about 0.6 after 36 steps
    exported = build_model({"model_name": summary["model_dir"]})  # a CLIP directory again
    assert exported.temperature == pytest.approx(summary["temperature"], rel=1e-4)
    from mlplatform_embeddings.clip import ImagePath

    images = [str(tmp_path / "images" / f"{i}.png") for i in range(3)]
    vectors = embed(summary["model_dir"], ["a photo of the digit one"], images=images)
    assert vectors.shape == (4, 32)
    assert np.allclose(vectors[1:], exported.encode([ImagePath(i) for i in images]).numpy(), atol=1e-5)


@pytest.mark.slow
def test_text_tower_paired_with_image_tower_learns_and_exports(caption_towers, tmp_path):
    text_dir, image_dir = caption_towers
    data = write_digits(tmp_path, 600)
    summary = train({
        "model": {"model_name": str(text_dir), "image_model_name": str(image_dir), "projection_dim": 32},
        "data": {"train_file": str(data), "validation_split": 0.25, "query_column": "caption",
                 "image_column": "image"},
        "optim": {"learning_rate": 3e-3, "scheduler": "cosine", "warmup_steps": 5},
        "loss": {"temperature": 0.07},
        "batch_size": 50, "epochs": 4, "log_every": 9, "output_dir": str(tmp_path / "run"),
    }, seed=0, device="cpu")
    before, after = summary["evaluations"][0], summary["evaluations"][-1]
    assert before["zero_shot_accuracy"] < 0.25 and after["zero_shot_accuracy"] > 0.4, after
    trained = build_model({"model_name": str(text_dir), "image_model_name": str(image_dir),
                           "projection_dim": 32})
    reloaded = build_model({"model_name": summary["model_dir"]})  # towers.json -> both towers
    assert type(reloaded).__name__ == type(trained).__name__ == "TowerPairEncoder"
    images = [p for p in sorted((tmp_path / "images").glob("*.png"))[:5]]
    from mlplatform_embeddings.clip import ImagePath

    again = reloaded.encode([ImagePath(p) for p in images])
    assert again.shape == (5, 32) and not torch.allclose(again, trained.encode([ImagePath(p) for p in images]))


@pytest.mark.slow
def test_open_clip_model_learns_and_exports(tiny_open_clip, tmp_path):
    data = write_digits(tmp_path, 600)
    summary = train({
        "model": {"model_name": str(tiny_open_clip)},
        "data": {"train_file": str(data), "validation_split": 0.25, "query_column": "caption",
                 "image_column": "image"},
        "loss": {"learnable_temperature": True},
        "optim": {"learning_rate": 3e-3, "scheduler": "cosine", "warmup_steps": 5},
        "batch_size": 50, "epochs": 4, "log_every": 9, "output_dir": str(tmp_path / "run"),
    }, seed=0, device="cpu")
    before, after = summary["evaluations"][0], summary["evaluations"][-1]
    assert before["zero_shot_accuracy"] < 0.25 and after["zero_shot_accuracy"] > 0.4, after
    reloaded = build_model({"model_name": summary["model_dir"]})  # open_clip's local-dir format
    assert type(reloaded).__name__ == "OpenClipEncoder"
    assert reloaded.temperature == pytest.approx(summary["temperature"], rel=1e-4)


def test_collapsed_model_scores_exactly_chance_and_ties_share_credit():
    images, classes = torch.zeros(40, 8), torch.zeros(10, 8)  # every score equal
    assert zero_shot_accuracy(images, classes, [i % 10 for i in range(40)]) == pytest.approx(0.1)
    eye = torch.eye(10)
    assert zero_shot_accuracy(eye, eye, list(range(10))) == 1.0
    two_way = torch.tensor([[1.0, 1.0, 0.0]]), torch.eye(3)  # true class tied with one other
    assert zero_shot_accuracy(*two_way, [0]) == 0.5 and zero_shot_accuracy(*two_way, [2]) == 0.0


def test_clip_lora_preset_keeps_projections_trainable(tiny_clip):
    model = apply_lora(build_model({"model_name": str(tiny_clip), "use_lora": True, "lora_r": 4}),
                       {"model_name": str(tiny_clip), "use_lora": True, "lora_r": 4})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert {"visual_projection.weight", "text_projection.weight"} <= {n.rsplit("model.", 1)[-1] for n in trainable}
    assert not any("q_proj.base_layer" in n or n.endswith("patch_embedding.weight") for n in trainable)


def test_image_text_data_errors_name_the_line(tiny_clip, tmp_path):
    data = write_digits(tmp_path, 4)
    lines = data.read_text().splitlines()
    lines[2] = json.dumps({"caption": "a photo of the digit two", "image": "images/missing.png"})
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"line 3: image file .*missing.png does not exist"):
        train({"model": {"model_name": str(tiny_clip)},
               "data": {"train_file": str(data), "query_column": "caption", "image_column": "image"},
               "batch_size": 2, "output_dir": str(tmp_path / "run")}, device="cpu")


def _lora_layers(model):
    return {name.rsplit(".", 1)[-1] for name, layer in model.named_modules() if hasattr(layer, "lora_A")}


@pytest.mark.parametrize("family", ["clip", "open_clip", "towers"])
def test_lora_on_each_image_text_family_and_the_merged_and_adapter_exports_round_trip(
        family, request, tmp_path):
    """LoRA lands on each tower's attention (and open_clip's MLP) layers, the projections stay
    trainable, and both the merged export and the PEFT adapter export (adapters + trained
    projections + the base model's options) reload with the model's text and image embeddings
    and temperature."""
    if family == "clip":
        options = {"model_name": str(request.getfixturevalue("tiny_clip"))}
        layers, heads = {"q_proj", "k_proj", "v_proj", "out_proj"}, {"text_projection", "visual_projection"}
        adapters = {"backbone"}
    elif family == "open_clip":
        options = {"model_name": str(request.getfixturevalue("tiny_open_clip"))}
        # peft wraps nn.MultiheadAttention whole (its out_proj inside it)
        layers, heads = {"attn", "out_proj", "c_fc", "c_proj"}, {"text_projection", "visual.proj"}
        adapters = {"backbone"}
    else:
        text_dir, image_dir = request.getfixturevalue("caption_towers")
        options = {"model_name": str(text_dir), "image_model_name": str(image_dir), "projection_dim": 16}
        # BERT text tower (query/key/value/dense), ViT image tower (q/k/v/o_proj in transformers 5)
        layers = {"query", "key", "value", "dense", "q_proj", "k_proj", "v_proj", "o_proj"}
        heads = {"text.projection.", "image_projection.", "image.base_model.model.pooler.dense."}
        adapters = {"text.backbone", "image"}
    options = {**options, "use_lora": True, "lora_r": 4, "lora_dropout": 0.0}
    model = apply_lora(build_model(options), options)
    assert _lora_layers(model) == layers
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(any(h in n for n in trainable) for h in heads), trainable
    assert not [n for n in trainable if "lora_" not in n and not any(h in n for h in heads)]
    assert not any("pooler" in n and "lora_" in n for n in trainable)  # no LoRA in the text pooler
    torch.manual_seed(0)
    with torch.no_grad():  # trained-looking adapters (lora_B starts at zero) and heads
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter), alpha=0.5 if "lora_B" in name else 0.1)
    model.eval()
    data = write_digits(tmp_path, 3)
    images = [ImagePath(p) for p in sorted((data.parent / "images").glob("*.png"))]
    texts = ["a photo of the digit one", "the digit two"]
    expected = {"texts": model.encode(texts), "images": model.encode(images)}
    merged = build_model({"model_name": str(export_model(model, tmp_path / "export", temperature=0.05))})
    assert not _lora_layers(merged)  # merged
    adapter_dir = export_model(model, tmp_path / "adapter", temperature=0.05, adapter=True)
    manifest = json.loads((adapter_dir / "manifest.json").read_text())
    assert manifest["format"] == "peft-adapter" and manifest["adapter"] is True
    assert set(manifest["adapters"]) == adapters and manifest["base_model"]["family"] == family
    assert not list(adapter_dir.rglob("model.safetensors"))  # no copy of the base weights
    reloaded = load_exported(adapter_dir)  # the loader of embed / task=embed
    assert set(_lora_layers(reloaded)) == layers  # the adapters, on the rebuilt base
    base = build_model(manifest["base_model"]).eval()
    for kind, items in (("texts", texts), ("images", images)):
        assert torch.allclose(merged.encode(items), expected[kind], atol=1e-5)
        assert torch.allclose(reloaded.encode(items), expected[kind], atol=1e-6)
        assert not torch.allclose(base.encode(items), expected[kind], atol=1e-3)  # training showed
    if family != "towers":  # towers have no logit scale; the temperature is the loss's
        assert reloaded.temperature == pytest.approx(0.05) and merged.temperature == pytest.approx(0.05)
    # an adapter export re-exports, merged or as an adapter again, with the same embeddings
    again = build_model({"model_name": str(export_model(reloaded, tmp_path / "again", adapter=True))})
    assert torch.allclose(again.encode(images), expected["images"], atol=1e-6)
    with pytest.raises(ConfigError, match="is an adapter export: LoRA cannot be added"):
        build_model({"model_name": str(adapter_dir), "use_lora": True})


@pytest.mark.slow
def test_trainer_exports_a_clip_adapter_that_embed_loads_like_the_trained_model(tiny_clip, tmp_path):
    """2 LoRA steps with a learnable temperature and trainer.export_adapter=true: the embed
    task's loader rebuilds base + adapter + trained projections and embeds texts and images as
    the trained model (its final checkpoint, read independently) and its merged export do."""
    from mlplatform_embeddings.plugin import _run_embed_task
    from mlplatform_embeddings.schemas import EmbedTaskConfig
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    data = write_digits(tmp_path, 8)
    options = {"model_name": str(tiny_clip), "use_lora": True, "lora_r": 4, "lora_dropout": 0.0}
    summary = train({
        "model": options, "data": {"train_file": str(data), "query_column": "caption",
                                   "image_column": "image"},
        "loss": {"learnable_temperature": True}, "optim": {"learning_rate": 1e-2},
        "batch_size": 4, "max_steps": 2, "eval_before": False, "eval_after": False,
        "export_adapter": True, "output_dir": str(tmp_path / "run"),
    }, seed=0, device="cpu")
    model_dir = summary["model_dir"]
    manifest = json.loads(open(f"{model_dir}/manifest.json").read())
    assert manifest["format"] == "peft-adapter" and manifest["trained_steps"] == 2
    assert manifest["base_model"]["model_name"] == str(tiny_clip.resolve())
    # the trained model, from its final checkpoint (written just before the export)
    trained = apply_lora(build_model(options), options)
    state = load_file(f"{summary['checkpoint']}/model.safetensors")
    missing, unexpected = trained.load_state_dict(
        {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}, strict=False)
    assert not unexpected and not missing
    texts = ["a photo of the digit one", "the digit two"]
    images = sorted(str(p) for p in (tmp_path / "images").glob("*.png"))[:3]
    expected = torch.cat([trained.encode(texts), trained.encode([ImagePath(i) for i in images])]).numpy()
    cfg = OmegaConf.create({"device": "cpu"})
    cfg.task = OmegaConf.merge(OmegaConf.structured(EmbedTaskConfig),
                               {"model_dir": model_dir, "texts": texts, "images": images, "save": False})
    result = _run_embed_task(cfg)  # job=infer task=embed
    assert np.allclose(np.array(result["embeddings"]), expected, atol=1e-5)
    untrained = build_model({"model_name": str(tiny_clip)}).encode(texts).numpy()
    assert not np.allclose(expected[:2], untrained, atol=1e-3)  # the 2 steps changed the model
    reloaded = load_exported(model_dir)
    assert reloaded.temperature == pytest.approx(summary["temperature"], rel=1e-5)
    merged = export_model(reloaded, tmp_path / "merged", temperature=reloaded.temperature)
    assert np.allclose(embed(merged, texts, images=images), expected, atol=1e-5)


def test_open_clip_grad_cache_with_lora_hard_negative_images_and_a_teacher(tiny_open_clip, tiny_clip, tmp_path):
    """Hard-negative images join the pool (the loss sees them), the teacher's caption and image
    embeddings reach the distillation term, and GradCache gives the uncached LoRA gradients."""
    data = write_digits(tmp_path, 6)
    pairs = read_pairs(data, DataConfig(train_file=str(data), query_column="caption",
                                        image_column="image", negative_columns=["negative"]))
    assert all(isinstance(n, ImagePath) for p in pairs for n in p.negatives) and len(pairs[0].negatives) == 1
    options = {"model_name": str(tiny_open_clip), "use_lora": True, "lora_r": 4, "lora_dropout": 0.0}
    torch.manual_seed(0)
    encoder = apply_lora(build_model(options), options)
    with torch.no_grad():
        for name, parameter in encoder.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    teacher = build_model({"model_name": str(tiny_clip)}).eval()
    seen = {}

    class Recording(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = build_loss("infonce", temperature=0.1, learnable_temperature=True)

        def forward(self, query, positive, negatives=None, **ids):
            seen["negatives"] = None if negatives is None else negatives.detach()
            return self.inner(query, positive, negatives, **ids)

    module = ContrastiveModel(encoder, Recording(), {"kind": "kl", "weight": 0.5, "temperature": 0.1}).train()
    batch = PairCollator(encoder, keep_texts=True)(pairs)
    targets = teacher_embeddings(teacher, batch, "cpu")
    negatives = [n for p in pairs for n in p.negatives]
    expected = torch.cat([teacher.encode(batch["query_texts"]),
                          teacher.encode([p.positive for p in pairs] + negatives)])
    assert targets.shape == (18, 32) and torch.allclose(targets, expected, atol=1e-5)
    for key in ("query_texts", "document_texts"):
        batch.pop(key)
    loss = module(**batch, teacher_embeddings=targets)
    assert torch.allclose(seen["negatives"], encoder.encode(negatives), atol=1e-5)
    loss.backward()
    uncached = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    without_teacher = module(**batch)
    assert not torch.allclose(without_teacher, loss)  # the distillation term counts

    AcceleratorState._reset_state()
    small = PairCollator(encoder, max_rows=2)(pairs)
    cached_loss = grad_cache_backward(module, module, {**small, "teacher_embeddings": targets},
                                      Accelerator(cpu=True))
    cached = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    assert torch.allclose(cached_loss, loss.detach(), rtol=1e-5)
    assert cached.keys() == uncached.keys() and any("lora_A" in n for n in cached)
    for name, grad in uncached.items():
        # 1e-6 plus 1e-5 of the largest entry: chunked sums round differently (2e-6 of 0.3)
        error = float((cached[name] - grad).abs().max())
        assert error <= 1e-5 * float(grad.abs().max()) + 1e-6, (name, error)


@pytest.mark.slow
def test_trainer_runs_open_clip_with_lora_negatives_distillation_and_grad_cache(
        tiny_open_clip, tiny_clip, tiny_bert, tmp_path):
    data = write_digits(tmp_path, 8)
    summary = train({
        "model": {"model_name": str(tiny_open_clip), "use_lora": True, "lora_r": 4,
                  "teacher_model_name": str(tiny_clip)},
        "data": {"train_file": str(data), "query_column": "caption", "image_column": "image",
                 "negative_columns": ["negative"]},
        "optim": {"learning_rate": 1e-2}, "batch_size": 4, "max_steps": 2, "log_every": 1,
        "grad_cache": True, "grad_cache_chunk_size": 3, "eval_before": False, "eval_after": False,
        "output_dir": str(tmp_path / "run"),
    }, seed=0, device="cpu")
    assert summary["steps"] == 2 and all(np.isfinite(h["loss"]) for h in summary["history"])
    manifest = json.loads(open(f"{summary['model_dir']}/manifest.json").read())
    assert manifest["lora_merged"] is True and manifest["format"] == "open_clip"
    trained = build_model({"model_name": summary["model_dir"]}).encode(["a photo of the digit one"])
    base = build_model({"model_name": str(tiny_open_clip)}).encode(["a photo of the digit one"])
    assert not torch.allclose(trained, base, atol=1e-4)  # the adapters trained and were merged
    with pytest.raises(ConfigError, match="is a text model, the student an image-text one"):
        train({"model": {"model_name": str(tiny_open_clip), "teacher_model_name": str(tiny_bert)},
               "data": {"train_file": str(data), "query_column": "caption", "image_column": "image"},
               "batch_size": 4, "output_dir": str(tmp_path / "bad")}, device="cpu")
