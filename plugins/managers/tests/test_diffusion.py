"""Stable Diffusion (txt2img / img2img / inpaint) on a tiny random-weight pipeline saved with
diffusers' save_pretrained and loaded back through the stable_diffusion manager: every mode through
the CLI end to end (a batch file and the safety checker with txt2img; a mask with inpaint), and the
Python API for seeds, schedulers and flagged images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from managers_helpers import hydra_dir
from mlplatform_managers import ModelManager
from mlplatform_managers.images import png_parameters
from mlplatform_managers.schemas import Img2ImgTaskConfig, Txt2ImgTaskConfig
from mlplatform_managers.tasks import TaskContext
from mlplatform_managers.tasks.diffusion import Img2ImgTask, Txt2ImgTask
from PIL import Image

from mlplatform.api import ConfigError
from mlplatform.testing import run_cli

FAST = dict(steps=2, width=32, height=32)


def cli(tmp_path, env, *args):
    return run_cli("job=infer", *args, hydra_dir(tmp_path), cwd=tmp_path, env=env, timeout=300)


@pytest.fixture(scope="module")
def sd_manager(tiny_models, tiny_sd):
    manager = ModelManager(tiny_sd[0], catalog_dirs=[tiny_models[1], tiny_sd[1]])
    yield manager
    manager.unload_all()


def context(manager, tmp_path, seed=0):
    return TaskContext(manager=manager, model="tiny_sd", device="cpu", dtype="float32",
                       seed=seed, output_dir=tmp_path)


def pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(np.int16)


def test_txt2img_batch_file_through_the_cli(tmp_path, sd_env):
    (tmp_path / "prompts.txt").write_text("a photo of a cat\n\na dog\n")
    result = cli(tmp_path, sd_env, "task=txt2img", "model.name=tiny_sd", "task.batch_file=prompts.txt",
                 "task.images_per_prompt=2", "task.steps=2", "task.width=32", "task.height=40",
                 "task.scheduler=euler_a", "task.seed=7", "task.safety_checker=tiny_safety_lenient")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    records = json.loads((run / "generations.json").read_text())
    assert [(r["item"], r["image"], r["seed"]) for r in records] == \
        [(0, 0, 7), (0, 1, 8), (1, 0, 9), (1, 1, 10)]
    images = []
    for record in records:
        params = png_parameters(record["output"])
        assert params["prompt"] == ["a photo of a cat", "a dog"][record["item"]]
        assert params["scheduler_class"] == "EulerAncestralDiscreteScheduler"
        assert params["steps"] == 2 and params["censored"] is False
        assert params["safety_checker"] == "tiny_safety_lenient"
        array = pixels(record["output"])
        assert array.shape == (40, 32, 3) and array.std() > 1  # an image, not a blank
        images.append(array)
    assert not np.array_equal(images[0], images[1])  # each image its own seed


def test_img2img_flagged_images_are_replaced_and_marked(sd_manager, tmp_path, image_file, capsys):
    result = Img2ImgTask().run(context(sd_manager, tmp_path), Img2ImgTaskConfig(
        prompt="a painting", input=str(image_file), steps=2, strength=0.5,
        safety_checker="tiny_safety_strict"))
    out = tmp_path / "img2img_00000_0.png"
    assert result["images"][0]["output"] == str(out)
    params = png_parameters(out)
    assert params["censored"] is True and params["strength"] == 0.5
    assert params["width"] == 24 and params["height"] == 16  # 24x20 input, rounded to 8s
    assert pixels(out).max() == 0 and "FLAGGED" in capsys.readouterr().out


def test_seeds_reproduce_single_images_and_schedulers_differ(sd_manager, tmp_path):
    ctx = context(sd_manager, tmp_path)
    pair = Txt2ImgTask().run(ctx, Txt2ImgTaskConfig(prompt="a cat", seed=3, images_per_prompt=2,
                                                    output_prefix="pair_", **FAST))
    single = Txt2ImgTask().run(ctx, Txt2ImgTaskConfig(prompt="a cat", seed=4, output_prefix="one_",
                                                      **FAST))
    second, alone = pixels(pair["images"][1]["output"]), pixels(single["images"][0]["output"])
    assert np.abs(second - alone).max() <= 2  # image 1 of seed 3 is seed 4 on its own
    ddim = Txt2ImgTask().run(ctx, Txt2ImgTaskConfig(prompt="a cat", seed=4, scheduler="ddim",
                                                    output_prefix="ddim_", **FAST))
    assert np.abs(pixels(ddim["images"][0]["output"]) - alone).max() > 2
    with pytest.raises(ConfigError, match="did you mean 'euler_a'"):
        Txt2ImgTask().run(ctx, Txt2ImgTaskConfig(prompt="a cat", scheduler="euler_b", **FAST))


def test_img2img_through_the_cli(tmp_path, sd_env, image_file):
    result = cli(tmp_path, sd_env, "task=img2img", "model.name=tiny_sd", "task.prompt=a painting",
                 f"task.input={image_file}", "task.steps=2", "task.strength=0.5", "task.seed=5")
    assert result.returncode == 0, result.stderr
    records = json.loads((tmp_path / "run" / "generations.json").read_text())
    assert len(records) == 1 and records[0]["seed"] == 5
    out = tmp_path / "run" / "img2img_00000_0.png"
    assert records[0]["output"] == str(out) and f"-> {out}" in result.stdout
    params = png_parameters(out)
    assert params["task"] == "img2img" and params["strength"] == 0.5 and params["steps"] == 2
    assert params["width"] == 24 and params["height"] == 16  # 24x20 input, rounded to 8s
    assert params["input_sha256"] and params["censored"] is None
    array = pixels(out)
    assert array.shape == (16, 24, 3) and 0 <= array.min() and array.max() <= 255
    assert array.std() > 1  # an image, not a blank


def test_inpaint_through_the_cli_repaints_only_the_mask(tmp_path, sd_env):
    rng = np.random.default_rng(1)
    source = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(source).save(tmp_path / "in.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    result = cli(tmp_path, sd_env, "task=inpaint", "model.name=tiny_sd", "task.prompt=a hat",
                 "task.input=in.png", "task.mask=mask.png", "task.steps=2")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "run" / "inpaint_00000_0.png"
    array = pixels(out)
    assert array.shape == (32, 32, 3) and 0 <= array.min() and array.max() <= 255
    keep = mask == 0
    assert np.array_equal(array[keep], source[keep].astype(np.int16))
    assert np.abs(array[~keep] - source[~keep]).mean() > 5
    params = png_parameters(out)
    assert params["task"] == "inpaint" and params["mask_sha256"] and params["strength"] == 1.0


def test_bad_diffusion_input_is_refused(sd_manager, tmp_path):
    ctx = context(sd_manager, tmp_path)
    cases = [
        (Txt2ImgTaskConfig(**FAST), "needs a prompt"),
        (Txt2ImgTaskConfig(prompt="x", steps=0, width=30), "task.steps is 0"),
        (Img2ImgTaskConfig(prompt="x", **FAST), "has no input image"),
        (Txt2ImgTaskConfig(prompt="x", safety_checker="tiny_clip", **FAST), "is a clip model"),
    ]
    for options, message in cases:
        task = Img2ImgTask() if isinstance(options, Img2ImgTaskConfig) else Txt2ImgTask()
        with pytest.raises(ConfigError, match=message):
            task.run(ctx, options)
    (tmp_path / "items.jsonl").write_text('{"prompt": "a", "sede": 1}\n')
    with pytest.raises(ConfigError, match=r"line 1: unknown key\(s\) \['sede'\]"):
        Txt2ImgTask().run(ctx, Txt2ImgTaskConfig(batch_file=str(tmp_path / "items.jsonl"), **FAST))
