"""Batch files read strictly; the work split across processes by accelerate's real PartialState
(two CPU processes under torchrun, gloo): every item done once, none lost, the per-process records
merged by process 0, an interrupted run resumed; and the batch modes of interrogate, caption and
safety_check."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import numpy as np
import pytest
from mlplatform_managers.batch import BatchRun, read_batch_file
from PIL import Image

from mlplatform.api import ConfigError

PROBE = """
import json, os, sys
from pathlib import Path
from mlplatform_managers.batch import BatchRun
items = [f"item{i}" for i in range(int(sys.argv[2]))]
batch = BatchRun(items, Path(sys.argv[1]), "records.json", {"steps": 3})
with open(os.path.join(sys.argv[1], f"rank{batch.rank}.json"), "w") as f:
    json.dump({"share": batch.share, "world": batch.world, "resumed": batch.resumed}, f)
for index, _item in reversed(batch.share):
    batch.done(index, [{"item": index, "done_by": batch.rank}])
lines = batch.finish()
assert (lines is not None) == (batch.rank == 0)
"""


def interrupted_run(out, items, done, settings=None):
    """An earlier single-process run of `items` that finished `done` and was then killed while
    writing its next progress line."""
    batch = BatchRun(items, out, "records.json", {"steps": 3} if settings is None else settings)
    for index, _item in batch.share[:done]:
        batch.done(index, [{"item": index, "done_by": "earlier"}])
    with open(out / "records.rank0.progress.jsonl", "a") as handle:
        handle.write('{"item": 9, "sour')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_split_the_items_without_overlap_or_loss(tmp_path):
    """...resuming a single process's interrupted run: the two processes split only the items it
    left, and process 0's records file holds both runs' work."""
    interrupted_run(tmp_path, [f"item{i}" for i in range(7)], done=3)
    (tmp_path / "probe.py").write_text(PROBE)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         str(tmp_path / "probe.py"), str(tmp_path), "7"],
        capture_output=True, text=True, timeout=240, start_new_session=True)
    assert result.returncode == 0, result.stderr
    shares = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(s["world"] == 2 and s["resumed"] == 3 for s in shares)
    done = [index for s in shares for index, _item in s["share"]]
    assert sorted(done) == [3, 4, 5, 6] and all(s["share"] for s in shares)
    assert all(item == f"item{index}" for s in shares for index, item in s["share"])
    # process 0 wrote every process's records (and the earlier run's) in item order, once both
    # had finished, and removed the progress files
    merged = json.loads((tmp_path / "records.json").read_text())
    assert [r["item"] for r in merged] == list(range(7))
    assert [r["done_by"] for r in merged[:3]] == ["earlier"] * 3
    assert {r["done_by"] for r in merged[3:]} == {0, 1}
    assert not list(tmp_path.glob("records.rank*"))


def test_a_resumed_batch_must_be_the_same_batch(tmp_path):
    items = ["a.png", "b.png", "c.png"]
    interrupted_run(tmp_path, items, done=2)
    with pytest.raises(ConfigError, match=r"item 1 as 'b.png', but item 1 of this batch is "
                                          r"'x.png'.*another batch") as info:
        BatchRun(["a.png", "x.png", "c.png"], tmp_path, "records.json", {"steps": 3})
    assert "hydra.run.dir" in info.value.fix
    with pytest.raises(ConfigError, match=r"other settings \(steps: 3 -> 4\)"):
        BatchRun(items, tmp_path, "records.json", {"steps": 4})
    # the same batch: the half-written line is ignored, item 2 is done, then all three are merged
    batch = BatchRun(items, tmp_path, "records.json", {"steps": 3})
    assert batch.resumed == 2 and batch.share == [(2, "c.png")]
    batch.done(2, [{"item": 2, "done_by": "now"}])
    lines = batch.finish()
    assert [line["item"] for line in lines] == [0, 1, 2]
    records = json.loads((tmp_path / "records.json").read_text())
    assert [r["done_by"] for r in records] == ["earlier", "earlier", "now"]
    assert not list(tmp_path.glob("*.progress.jsonl"))


def test_a_single_process_does_everything(tmp_path):
    batch = BatchRun(["a", "b"], tmp_path, "records.json")
    assert (batch.share, batch.rank, batch.world, batch.resumed) == ([(0, "a"), (1, "b")], 0, 1, 0)


def test_batch_files_are_read_strictly(tmp_path):
    text = tmp_path / "prompts.txt"
    text.write_text("a cat\n\n  a dog  \n")
    assert read_batch_file(text, ("prompt",)) == [{"prompt": "a cat"}, {"prompt": "a dog"}]
    lines = tmp_path / "items.jsonl"
    lines.write_text('{"prompt": "x", "seed": 2}\n')
    assert read_batch_file(lines, ("prompt", "seed")) == [{"prompt": "x", "seed": 2}]
    for content, message in [("[1]\n", "a list, not an object"), ("{oops\n", "line 1: not JSON"),
                             ("\n", "has no items")]:
        lines.write_text(content)
        with pytest.raises(ConfigError, match=message):
            read_batch_file(lines, ("prompt",))
    with pytest.raises(ConfigError, match="does not exist"):
        read_batch_file(tmp_path / "nope.txt", ("prompt",))


@pytest.fixture(scope="module")
def batch_run(tiny_models, tmp_path_factory):
    """run(task, options, model) in a fresh output dir: the task's result and the dir."""
    from mlplatform_managers import ModelManager
    from mlplatform_managers.tasks import TaskContext

    manager = ModelManager(tiny_models[0], catalog_dirs=[tiny_models[1]])

    def run(task, options, model):
        out = tmp_path_factory.mktemp("batch")
        ctx = TaskContext(manager=manager, model=model, device="cpu", dtype="float32", seed=0,
                          output_dir=out)
        return task.run(ctx, options), out

    yield run
    manager.unload_all()


@pytest.fixture
def image_list(tmp_path):
    rng = np.random.default_rng(4)
    paths = []
    for index in range(3):
        paths.append(tmp_path / f"img{index}.png")
        Image.fromarray(rng.integers(0, 256, (20 + index, 24, 3), dtype=np.uint8)).save(paths[-1])
    (tmp_path / "images.txt").write_text("\n".join(str(p) for p in paths) + "\n")
    return tmp_path / "images.txt", paths


def test_interrogate_batch(batch_run, image_list):
    from mlplatform_managers.schemas import InterrogateTaskConfig
    from mlplatform_managers.tasks.interrogate import InterrogateTask
    from safetensors.torch import load_file

    batch, paths = image_list
    texts = ["a cat", "a dog"]
    result, out = batch_run(InterrogateTask(), InterrogateTaskConfig(
        batch_file=str(batch), texts=texts, top_count=1), "tiny_clip")
    records = json.loads((out / "interrogations.json").read_text())
    assert [(r["item"], r["input"]) for r in records] == [(i, str(p)) for i, p in enumerate(paths)]
    assert all(len(r["rank"]) == 1 and set(r["similarity"]) == set(texts) for r in records)
    embeddings = load_file(str(out / "embeddings.safetensors"))
    assert embeddings["images"].shape == (3, 16) and embeddings["texts"].shape == (2, 16)
    # row i is image i: its similarities are the record's
    for record, row in zip(records, embeddings["images"], strict=True):
        cosine = (embeddings["texts"] @ row).tolist()
        assert cosine == pytest.approx([record["similarity"][t] for t in texts], abs=1e-5)
    assert not list(out.glob("*.rank*"))
    assert result["items"] == 3 and result["processes"] == 1


def test_caption_and_safety_check_batches(batch_run, image_list):
    from mlplatform_managers.images import png_parameters
    from mlplatform_managers.schemas import CaptionTaskConfig, SafetyCheckTaskConfig
    from mlplatform_managers.tasks.caption import CaptionTask
    from mlplatform_managers.tasks.safety import SafetyCheckTask

    batch, paths = image_list
    _result, out = batch_run(CaptionTask(), CaptionTaskConfig(batch_file=str(batch),
                                                              max_new_tokens=3), "tiny_blip")
    captions = json.loads((out / "captions.json").read_text())
    assert [(r["item"], r["input"]) for r in captions] == [(i, str(p)) for i, p in enumerate(paths)]
    assert all(isinstance(r["caption"], str) and len(r["caption"].split()) <= 3 for r in captions)
    _result, out = batch_run(SafetyCheckTask(), SafetyCheckTaskConfig(batch_file=str(batch)),
                             "tiny_safety_strict")
    reports = json.loads((out / "safety.json").read_text())
    assert [r["item"] for r in reports] == [0, 1, 2] and all(r["censored"] for r in reports)
    for report, path in zip(reports, paths, strict=True):
        assert report["output"] == str(out / f"{path.stem}_checked.png")
        assert png_parameters(report["output"])["censored"] is True
    _result, out = batch_run(SafetyCheckTask(), SafetyCheckTaskConfig(batch_file=str(batch)),
                             "tiny_safety_lenient")
    reports = json.loads((out / "safety.json").read_text())
    assert not any(r["censored"] for r in reports)
    for report, path in zip(reports, paths, strict=True):  # clean images kept as they were
        with Image.open(report["output"]) as kept, Image.open(path) as source:
            assert np.array_equal(np.asarray(kept.convert("RGB")), np.asarray(source.convert("RGB")))
        assert png_parameters(report["output"])["censored"] is False


def test_batch_modes_refuse_bad_input(batch_run, image_list, tmp_path):
    from mlplatform_managers.schemas import CaptionTaskConfig, SafetyCheckTaskConfig
    from mlplatform_managers.tasks.caption import CaptionTask
    from mlplatform_managers.tasks.safety import SafetyCheckTask

    batch, paths = image_list
    with pytest.raises(ConfigError, match="replaces task.input"):
        batch_run(CaptionTask(), CaptionTaskConfig(input=str(paths[0]), batch_file=str(batch)),
                  "tiny_blip")
    with pytest.raises(ConfigError, match="needs an image"):
        batch_run(SafetyCheckTask(), SafetyCheckTaskConfig(), "tiny_safety_strict")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "img0.png").write_bytes(paths[0].read_bytes())
    (tmp_path / "dupes.txt").write_text(f"{paths[0]}\n{tmp_path / 'other' / 'img0.png'}\n")
    with pytest.raises(ConfigError, match="same name 'img0'"):
        batch_run(SafetyCheckTask(), SafetyCheckTaskConfig(batch_file=str(tmp_path / "dupes.txt")),
                  "tiny_safety_strict")


def test_unreadable_images_are_refused_before_any_work(batch_run, image_list, tmp_path):
    """A missing file and a non-image late in the list stop the batch before item 0 is done, and
    the error names both (with every process of a launch refusing alike, none waits for others)."""
    from mlplatform_managers.errors import InputImageError
    from mlplatform_managers.schemas import SafetyCheckTaskConfig
    from mlplatform_managers.tasks.safety import SafetyCheckTask

    _batch, paths = image_list
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "late.txt").write_text(
        "\n".join([*map(str, paths), str(tmp_path / "gone.png"), str(tmp_path / "notes.png")]))
    seen = set(tmp_path.parent.iterdir())
    with pytest.raises(InputImageError, match=r"2 of 5 images cannot be read: .*gone\.png \(no "
                       r"such file\); .*notes\.png \(not an image"):
        batch_run(SafetyCheckTask(), SafetyCheckTaskConfig(batch_file=str(tmp_path / "late.txt")),
                  "tiny_safety_strict")
    made = set(tmp_path.parent.iterdir()) - seen  # the run's output dir, made by batch_run
    assert all(not list(out.iterdir()) for out in made)
