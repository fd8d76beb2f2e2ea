"""Image-text (CLIP): a tiny CLIP trained on scikit-learn's bundled digits (images written to a
tmp dir, captions "a photo of the digit seven") goes from chance to well above it in zero-shot
classification; a collapsed model scores exactly chance; LoRA keeps the projections trainable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from mlplatform_embeddings import build_model, embed, train
from mlplatform_embeddings.clip import zero_shot_accuracy
from mlplatform_embeddings.model_builder import apply_lora

from mlplatform.api import ConfigError

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def write_digits(root, count: int):
    """The first `count` digits as 8x8 RGB PNGs and a JSONL of {"caption", "image"} records."""
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
                                 "image": f"images/{i}.png"}))
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
