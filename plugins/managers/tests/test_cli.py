"""`job=infer` end to end through the real CLI (a subprocess each), and every bad input it
answers with exit status 2 and a clear message."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from managers_helpers import hydra_dir, write_catalog
from mlplatform_managers.images import png_parameters
from PIL import Image

from mlplatform.testing import make_distribution, run_cli


def cli(tmp_path, env, *args, extra_path=()):
    return run_cli("job=infer", *args, hydra_dir(tmp_path), cwd=tmp_path, env=env,
                   extra_path=extra_path, timeout=300)


def test_upscale_end_to_end(tmp_path, cli_env):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    pixels[:10, :10, 3] = 0  # a transparent corner
    Image.fromarray(pixels, "RGBA").save(tmp_path / "in.png")
    result = cli(tmp_path, cli_env, "task=upscale", "model.name=tiny_esrgan",
                 "task.input=in.png", "task.tile=32", "task.overlap=16")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "run" / "in_x4.png"
    assert f"-> {out}" in result.stdout
    with Image.open(out) as image:
        assert image.mode == "RGBA" and image.size == (200, 160)
        array = np.asarray(image)
    assert array[:36, :36, 3].max() <= 8 and array[60:, 60:, 3].min() >= 247  # alpha kept
    rgb = array[..., :3].astype(float)
    assert 0 <= rgb.min() and rgb.max() <= 255 and 20 < rgb.mean() < 235 and rgb.std() > 1
    params = png_parameters(out)
    assert params["model"] == "tiny_esrgan" and params["scale"] == 4 and params["tile"] == 32
    summary = json.loads((tmp_path / "run" / "infer_result.json").read_text())
    assert summary["result"]["width"] == 200


def test_interrogate_end_to_end(tmp_path, cli_env, image_file):
    (tmp_path / "texts.txt").write_text("a painting\n\na photo of a dog\n")
    result = cli(tmp_path, cli_env, "task=interrogate", "model.name=tiny_clip",
                 f"task.input={image_file}", "task.texts=[a cat,a dog]",
                 "task.texts_file=texts.txt", "task.top_count=3")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "interrogation.json").read_text())
    texts = ["a cat", "a dog", "a painting", "a photo of a dog"]
    assert report["texts"] == texts and set(report["similarity"]) == set(texts)
    assert all(-1.0 <= v <= 1.0 for v in report["similarity"].values())
    confidences = [r["confidence"] for r in report["rank"]]
    assert len(confidences) == 3 and confidences == sorted(confidences, reverse=True)
    assert all(0 <= c <= 100 for c in confidences)
    from safetensors.torch import load_file

    embeddings = load_file(str(tmp_path / "run" / "embeddings.safetensors"))
    assert embeddings["image"].shape == (1, 16) and embeddings["texts"].shape == (4, 16)
    assert abs(float(embeddings["image"].norm()) - 1.0) < 1e-4


def test_caption_end_to_end(tmp_path, cli_env, image_file):
    from managers_helpers import BLIP_WORDS

    result = cli(tmp_path, cli_env, "task=caption", "model.name=tiny_blip",
                 f"task.input={image_file}", "task.max_new_tokens=5")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "caption.json").read_text())
    words = report["caption"].split()
    assert report["model"] == "tiny_blip" and 1 <= len(words) <= 5
    assert set(words) <= set(BLIP_WORDS[6:])  # decoded from the vocabulary, specials skipped


def test_safety_check_end_to_end(tmp_path, cli_env, image_file):
    """The strict checker flags the image: a black image of its size, marked censored. (The
    lenient checker's image kept as it was: test_batch.py, through the same task code.)"""
    result = cli(tmp_path, cli_env, "task=safety_check", "model.name=tiny_safety_strict",
                 f"task.input={image_file}")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "safety.json").read_text())
    assert report["censored"] is True
    out = tmp_path / "run" / "input_checked.png"
    assert png_parameters(out)["censored"] is True and "FLAGGED" in result.stdout
    with Image.open(out) as image, Image.open(image_file) as source:
        assert image.size == source.size and np.asarray(image).max() == 0


def test_an_interrupted_upscale_batch_resumes_where_it_stopped(tmp_path, cli_env):
    """Item 3 of 5 is a truncated PNG (its header reads, its pixels do not): the run stops there
    with exit 2 and loses nothing; with the image fixed, the same command into the same run dir
    does items 3 and 4 only and writes the records of all five."""
    rng = np.random.default_rng(2)
    paths = []
    for index in range(5):
        paths.append(tmp_path / f"img{index}.png")
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(paths[-1])
    good = paths[3].read_bytes()
    paths[3].write_bytes(good[: len(good) // 2])
    (tmp_path / "images.txt").write_text("\n".join(map(str, paths)) + "\n")
    args = ("task=upscale", "model.name=tiny_esrgan", "task.batch_file=images.txt")
    first = cli(tmp_path, cli_env, *args)
    assert first.returncode == 2, (first.stdout, first.stderr)
    assert "img3.png" in first.stderr
    run = tmp_path / "run"
    progress = [json.loads(line) for line in
                (run / "upscaled.rank0.progress.jsonl").read_text().splitlines()]
    assert [line["item"] for line in progress] == [0, 1, 2]
    written = {i: (run / f"img{i}_x4.png").stat().st_mtime_ns for i in range(3)}

    paths[3].write_bytes(good)
    second = cli(tmp_path, cli_env, *args)
    assert second.returncode == 0, second.stderr
    assert "3 of 5 items were done by an earlier run" in second.stdout + second.stderr
    records = json.loads((run / "upscaled.json").read_text())
    assert [r["item"] for r in records] == [0, 1, 2, 3, 4]
    assert all(Path(r["output"]).is_file() for r in records)
    assert {i: (run / f"img{i}_x4.png").stat().st_mtime_ns for i in range(3)} == written
    assert json.loads((run / "infer_result.json").read_text())["result"]["resumed"] == 3
    assert not list(run.glob("*.progress.jsonl"))
    # the same as an uninterrupted run: records (but the run dir) and every output pixel
    whole = run_cli("job=infer", *args, f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path,
                    env=cli_env, timeout=300)
    assert whole.returncode == 0, whole.stderr
    again = json.loads((tmp_path / "whole" / "upscaled.json").read_text())
    assert [{**r, "output": Path(r["output"]).name} for r in again] == [
        {**r, "output": Path(r["output"]).name} for r in records]
    for record in records:
        with Image.open(record["output"]) as a, \
                Image.open(tmp_path / "whole" / Path(record["output"]).name) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))
    # another batch file into that run dir is refused, naming the clash, before any work
    (tmp_path / "other.txt").write_text(f"{paths[1]}\n")
    (run / "upscaled.rank0.progress.jsonl").write_text(
        json.dumps({"item": 0, "source": str(paths[0]), "settings": {}, "records": []}) + "\n")
    clash = cli(tmp_path, cli_env, "task=upscale", "model.name=tiny_esrgan",
                "task.batch_file=other.txt")
    assert clash.returncode == 2 and "progress of another batch" in clash.stderr


def test_list_shows_local_availability(tmp_path, cli_env):
    result = cli(tmp_path, cli_env, "task=list")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads((tmp_path / "run" / "catalog.json").read_text())}
    assert rows["tiny_esrgan"]["status"] == "available"
    assert rows["RealESRGAN_x4plus"]["status"] == "missing" and rows["RealESRGAN_x4plus"]["hashed"]
    assert rows["clip_vit_large_patch14"]["hashed"]  # pinned to a hub commit
    assert not rows["facexlib_retinaface_mobilenet"]["hashed"]
    assert "tiny_clip" in result.stdout and "UNHASHED" in result.stdout
    only = cli(tmp_path, cli_env, "task=list", "task.type=esrgan", "task.available_only=true")
    assert "tiny_esrgan" in only.stdout and "RealESRGAN_x4plus " not in only.stdout


def test_a_plugin_adds_a_task(tmp_path, cli_env):
    root = make_distribution(
        tmp_path / "site", "throwaway-task",
        modules={
            "throwaway_task": """
                from dataclasses import dataclass
                from mlplatform.api import ComponentConfig, hookimpl
                from mlplatform_managers import Task

                @dataclass
                class CountConfig(ComponentConfig):
                    word: str = "x"

                class CountTask(Task):
                    name = "count"
                    description = "count esrgan models"
                    schema = CountConfig

                    def run(self, ctx, options):
                        n = len(ctx.manager.filtered(type="esrgan"))
                        print(f"{options.word}: {n}")
                        return {"count": n}

                def shout(cfg):  # a plain task: run(cfg) reads the composed config itself
                    print(cfg.task.word.upper())
                    return {"word": cfg.task.word}

                @hookimpl
                def register_model_managers(registry):
                    registry.add("task", "count", CountTask())
                    registry.add("task", "shout", shout)

                @hookimpl
                def register_config_groups(registry):
                    registry.add_config_package("throwaway_task_conf")
                    registry.add_config_schema("task", "count", CountConfig)
                    registry.add_config_schema("task", "shout", CountConfig)
            """,
            "throwaway_task_conf.__init__": "",
            "throwaway_task_conf.task.__init__": "",
        },
        entry_points={"throwaway": "throwaway_task"},
        files={"throwaway_task_conf/task/count.yaml": """
            defaults:
              - /schema/task/count@_here_
              - _self_
            name: count
            word: esrgans
        """, "throwaway_task_conf/task/shout.yaml": """
            defaults:
              - /schema/task/shout@_here_
              - _self_
            name: shout
            word: hello
        """},
    )
    env = {**cli_env, "MLPLATFORM_LOAD_PLUGINS": "managers,throwaway"}
    result = cli(tmp_path, env, "task=count", extra_path=[root])
    assert result.returncode == 0, result.stderr
    assert "esrgans: 4" in result.stdout  # three packaged + tiny_esrgan
    plain = cli(tmp_path, env, "task=shout", extra_path=[root])
    assert plain.returncode == 0 and "HELLO" in plain.stdout, plain.stderr


def _bad_catalog(tmp_path):
    write_catalog(tmp_path / "badcat", "esrgan", [{"name": "oops", "type": "esrgan",
                                                   "licence": "x", "files": [{"path": "a/../../b"}]}])
    return str(tmp_path / "badcat")


def _tampered(tmp_path, cli_env):
    models = tmp_path / "tmodels"
    (models / "tampered").mkdir(parents=True)
    (models / "tampered" / "model.safetensors").write_bytes(b"not the file the catalog hashed")
    write_catalog(tmp_path / "tcat", "esrgan", [{"name": "tampered", "type": "esrgan", "licence": "x",
                                                 "files": [{"path": "model.safetensors", "sha256": "1" * 64}]}])
    return {**cli_env, "MLPLATFORM_MODELS_DIR": str(models),
            "MLPLATFORM_CATALOG_PATH": cli_env["MLPLATFORM_CATALOG_PATH"] + ":" + str(tmp_path / "tcat")}


def _unhashed(tmp_path, cli_env):
    """A user's entry whose file has no sha256 and no hub commit to check it against."""
    write_catalog(tmp_path / "ucat", "esrgan", [{
        "name": "unhashed", "type": "esrgan", "licence": "x",
        "files": [{"path": "model.safetensors", "sha256": None}],
        "download": [{"file_name": "model.safetensors", "url": "https://example.com/w.safetensors"}]}])
    return {**cli_env,
            "MLPLATFORM_CATALOG_PATH": cli_env["MLPLATFORM_CATALOG_PATH"] + ":" + str(tmp_path / "ucat")}


def _pickled(tmp_path, cli_env):
    import argparse

    import torch
    from managers_helpers import rrdbnet_state_dict

    from mlplatform.api import sha256_file

    models = tmp_path / "pmodels"
    (models / "pickled").mkdir(parents=True)
    path = models / "pickled" / "w.pth"
    torch.save({"params_ema": rrdbnet_state_dict(), "args": argparse.Namespace(x=1)}, path)
    write_catalog(tmp_path / "pcat", "esrgan", [{"name": "pickled", "type": "esrgan", "licence": "x",
                                                 "files": [{"path": "w.pth", "sha256": sha256_file(path)}]}])
    return {**cli_env, "MLPLATFORM_MODELS_DIR": str(models),
            "MLPLATFORM_CATALOG_PATH": cli_env["MLPLATFORM_CATALOG_PATH"] + ":" + str(tmp_path / "pcat")}


@pytest.mark.parametrize("case", [
    "unknown_model_option", "unknown_model_name", "unknown_task", "missing_offline",
    "catalog_schema", "wrong_hash", "path_escape", "pickle", "budget", "bad_image", "wrong_type",
    "unhashed",
])
def test_bad_input_exits_2_with_a_clear_message(tmp_path, cli_env, image_file, case):
    env, upscale = dict(cli_env), ["task=upscale", f"task.input={image_file}"]
    args, expected = {
        "unknown_model_option": (["model=RealESRGAN_x4plu", *upscale], "did you mean model=RealESRGAN_x4plus"),
        "unknown_model_name": (["model.name=tiny_esrgn", *upscale], "did you mean 'tiny_esrgan'"),
        "unknown_task": (["task=upscal"], "did you mean task=upscale"),
        "missing_offline": (["model=RealESRGAN_x4plus", *upscale], "offline mode is on"),
        "catalog_schema": (["task=list", f"manager.catalog_dirs=[{_bad_catalog(tmp_path)}]"],
                           "entry #0 'oops', field files.0.path"),
        "wrong_hash": (["model.name=tampered", *upscale], "the catalog says 1111"),
        "path_escape": (["model.name=escape", *upscale], "outside the models directory"),
        "pickle": (["model.name=pickled", *upscale], "manager.allow_pickle=[pickled]"),
        "budget": (["model.name=tiny_esrgan", "manager.budget_bytes=1000", *upscale],
                   "more than the whole memory budget"),
        "bad_image": (["model.name=tiny_esrgan", "task=upscale", "task.input=broken.png"],
                      "cannot be decoded"),
        "wrong_type": (["model.name=tiny_clip", *upscale], "is a clip model; task=upscale takes esrgan"),
        "unhashed": (["model.name=unhashed", *upscale], "manager.allow_unhashed=[unhashed]"),
    }[case]
    if case == "wrong_hash":
        env = _tampered(tmp_path, cli_env)
    elif case == "pickle":
        env = _pickled(tmp_path, cli_env)
    elif case == "unhashed":
        env = _unhashed(tmp_path, cli_env)
    elif case == "path_escape":
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "w.safetensors").write_bytes(b"x")
        models = tmp_path / "emodels"
        (models / "escape").mkdir(parents=True)
        (models / "escape" / "w.safetensors").symlink_to(outside / "w.safetensors")
        write_catalog(tmp_path / "ecat", "esrgan", [{"name": "escape", "type": "esrgan", "licence": "x",
                                                     "files": [{"path": "w.safetensors", "sha256": "2" * 64}]}])
        env.update(MLPLATFORM_MODELS_DIR=str(models),
                   MLPLATFORM_CATALOG_PATH=env["MLPLATFORM_CATALOG_PATH"] + ":" + str(tmp_path / "ecat"))
    elif case == "bad_image":
        (tmp_path / "broken.png").write_bytes(textwrap.dedent("\x89PNG\r\n\x1a\n garbage").encode())
    result = cli(tmp_path, env, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "mlplatform: error:" in result.stderr and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    if case == "wrong_hash":  # quarantined, never used
        assert not (tmp_path / "tmodels" / "tampered" / "model.safetensors").exists()
        assert list((tmp_path / "tmodels" / ".quarantine").iterdir())
