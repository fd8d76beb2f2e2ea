"""open_clip models: a tiny random-weight OpenCLIP ViT and a tiny CoCa saved in open_clip's
checkpoint layout (open_clip_config.json + open_clip_model.safetensors), loaded back by open_clip
through the manager, interrogated (similarity and rank) with embeddings cached by content hash, and
CoCa captioning."""

from __future__ import annotations

import json

import numpy as np
import pytest
from managers_helpers import file_entries, hydra_dir, make_tiny_open_clip, write_catalog
from mlplatform_managers import ModelManager, interrogate
from mlplatform_managers.schemas import CaptionTaskConfig
from mlplatform_managers.tasks import TaskContext
from mlplatform_managers.tasks.caption import CaptionTask
from PIL import Image

from mlplatform.api import ConfigError
from mlplatform.testing import run_cli

pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def open_clip_manager(tmp_path_factory):
    root = tmp_path_factory.mktemp("open_clip")
    make_tiny_open_clip(root / "models" / "tiny_open_clip")
    make_tiny_open_clip(root / "models" / "tiny_coca", coca=True)
    write_catalog(root / "catalog", "open_clip", [{
        "name": name, "type": "open_clip", "licence": "test",
        "files": file_entries(root / "models" / name)} for name in ("tiny_open_clip", "tiny_coca")])
    manager = ModelManager(root / "models", catalog_dirs=[root / "catalog"])
    yield manager, root
    manager.unload_all()


def test_open_clip_loads_its_checkpoint_and_interrogates(open_clip_manager, image_file):
    from safetensors.torch import load_file

    manager, root = open_clip_manager
    model = manager.load("tiny_open_clip", device="cpu")
    saved = load_file(str(root / "models" / "tiny_open_clip" / "open_clip_model.safetensors"))
    loaded = model.model.state_dict()
    assert set(saved) == set(loaded)
    assert all(np.array_equal(saved[k].numpy(), loaded[k].numpy()) for k in saved)  # not re-initialised
    image = Image.open(image_file)
    texts = ["a cat", "a dog", "a photo of a cat"]
    first = interrogate(model, image, texts, top_count=2)
    assert all(-1.0 <= v <= 1.0 for v in first["similarity"].values())
    confidences = [r["confidence"] for r in first["rank"]]
    assert len(confidences) == 2 and confidences == sorted(confidences, reverse=True)
    best = max(first["similarity"], key=first["similarity"].get)
    assert first["rank"][0]["text"] == best
    cached = dict(model.image_cache), dict(model.text_cache)
    assert len(cached[0]) == 1 and len(cached[1]) == 3
    again = interrogate(model, image.copy(), [texts[0]], top_count=1)  # same pixels, known text
    assert again["similarity"][texts[0]] == first["similarity"][texts[0]]
    assert model.image_cache == cached[0] and model.text_cache == cached[1]
    assert all(model.image_cache[k] is v for k, v in cached[0].items())  # reused, not recomputed


def test_interrogate_open_clip_through_the_cli(open_clip_manager, image_file, tmp_path):
    from safetensors.torch import load_file

    _manager, root = open_clip_manager
    env = {"MLPLATFORM_LOAD_PLUGINS": "managers", "HF_HUB_OFFLINE": "1",
           "MLPLATFORM_CATALOG_PATH": str(root / "catalog"),
           "MLPLATFORM_MODELS_DIR": str(root / "models"), "HF_HOME": str(tmp_path / "hf_home")}
    result = run_cli("job=infer", "task=interrogate", "model.name=tiny_open_clip",
                     f"task.input={image_file}", "task.texts=[a cat,a dog,a red car]",
                     "task.top_count=2", hydra_dir(tmp_path), cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "interrogation.json").read_text())
    assert report["model"] == "tiny_open_clip" and report["texts"] == ["a cat", "a dog", "a red car"]
    assert all(-1.0 <= v <= 1.0 for v in report["similarity"].values())
    confidences = [r["confidence"] for r in report["rank"]]
    assert len(confidences) == 2 and confidences == sorted(confidences, reverse=True)
    assert all(0 <= c <= 100 for c in confidences)
    assert report["rank"][0]["text"] == max(report["similarity"], key=report["similarity"].get)
    embeddings = load_file(str(tmp_path / "run" / "embeddings.safetensors"))
    assert embeddings["image"].shape == (1, 16) and embeddings["texts"].shape == (3, 16)
    assert abs(float(embeddings["image"].norm()) - 1.0) < 1e-4


def test_coca_captions_and_plain_clip_refuses(open_clip_manager, image_file, tmp_path):
    manager, _root = open_clip_manager

    def run(model, **options):
        ctx = TaskContext(manager=manager, model=model, device="cpu", dtype="float32", seed=0,
                          output_dir=tmp_path)
        return CaptionTask().run(ctx, CaptionTaskConfig(input=str(image_file), **options))

    free = run("tiny_coca", max_new_tokens=6)["caption"]
    assert isinstance(free, str) and len(free.split()) <= 6
    assert run("tiny_coca", max_new_tokens=6)["caption"] == free  # greedy: deterministic
    prompted = run("tiny_coca", prompt="a photo of", max_new_tokens=3)["caption"]
    assert prompted.startswith("a photo of") and len(prompted.split()) <= 6
    assert json.loads((tmp_path / "caption.json").read_text())["caption"] == prompted
    with pytest.raises(ConfigError, match="cannot caption; only CoCa"):
        run("tiny_open_clip")
    with pytest.raises(ConfigError, match="greedy only"):
        run("tiny_coca", num_beams=2)
