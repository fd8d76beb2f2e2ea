"""The manager: loading through the real type managers, the memory budget (LRU eviction, pinning,
too big), concurrent loads, freeing memory on unload, safe loading, and tiling."""

from __future__ import annotations

import threading
import time
import weakref

import pytest
import torch
from managers_helpers import file_entries, make_tiny_blip, rrdbnet_state_dict, write_catalog
from mlplatform_managers import (
    BudgetError,
    ModelManager,
    TypeManager,
    UnsafeModelError,
    load_catalog,
    upscale_tiled,
)
from mlplatform_managers.tasks.upscale import upscale_with_fallback

from mlplatform.api import MLPlatformError

MiB = 1 << 20


class BlobManager(TypeManager):
    """A test type: a module holding `config.mib` MiB of float32, counting loads."""

    types = ("blob",)
    loads = 0

    def load_model(self, request):
        type(self).loads += 1
        time.sleep(0.05)  # widen the window for concurrent loaders
        module = torch.nn.Module()
        module.weight = torch.nn.Parameter(
            torch.ones(int(request.entry.config["mib"] * MiB // 4)), requires_grad=False)
        return module


def blob_manager(tmp_path, sizes: dict[str, float], budget: int | None = None) -> ModelManager:
    models = tmp_path / "models"
    entries = []
    for name, mib in sizes.items():
        (models / name).mkdir(parents=True, exist_ok=True)
        (models / name / "w").write_bytes(b"")  # the estimate is the file size; actual is larger
        entries.append({"name": name, "type": "blob", "licence": "test", "config": {"mib": mib},
                        "files": [{"path": "w", "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}]})
    write_catalog(tmp_path / "cat", "blob", entries)
    BlobManager.loads = 0
    return ModelManager(models, catalog=load_catalog([tmp_path / "cat"], packaged=False),
                        budget_bytes=budget, type_managers={"blob": BlobManager()})


def test_lru_eviction_order_and_pinning(tmp_path):
    manager = blob_manager(tmp_path, {"a": 1, "b": 1, "c": 1, "d": 1}, budget=int(2.5 * MiB))
    manager.load("a", device="cpu")
    manager.load("b", device="cpu")
    manager.load("a", device="cpu")  # a is now the most recently used
    manager.load("c", device="cpu")  # evicts b, the least recently used
    assert list(manager.loaded) == ["a", "c"]
    with manager.use("a", device="cpu"):  # pinned: never evicted
        manager.load("d", device="cpu")  # evicts c, not the pinned a
        assert list(manager.loaded) == ["a", "d"]
        with pytest.raises(MLPlatformError, match="in use"):
            manager.unload("a")
    assert manager.used_bytes(torch.device("cpu")) == 2 * MiB


def test_everything_pinned_is_a_clear_error(tmp_path):
    manager = blob_manager(tmp_path, {"a": 1, "b": 1}, budget=int(1.5 * MiB))
    with manager.use("a", device="cpu"), pytest.raises(BudgetError, match="in use"):
        manager.load("b", device="cpu")


def test_model_bigger_than_the_whole_budget(tmp_path):
    manager = blob_manager(tmp_path, {"small": 1, "huge": 4}, budget=2 * MiB)
    manager.load("small", device="cpu")
    with pytest.raises(BudgetError, match="more than the whole memory budget"):
        manager.load("huge", device="cpu")
    assert list(manager.loaded) == ["small"]  # no eviction storm for a model that cannot fit


def test_concurrent_loads_of_one_model_load_it_once(tmp_path):
    manager = blob_manager(tmp_path, {"a": 1})
    results = []
    threads = [threading.Thread(target=lambda: results.append(manager.load("a", device="cpu")))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert BlobManager.loads == 1 and len({id(r) for r in results}) == 1


UNLOAD_PROBE = """
import ctypes, ctypes.util, gc, json, sys, weakref
import psutil
from mlplatform_managers import ModelManager

def rss():
    gc.collect()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc_trim(0)  # glibc keeps freed heap pages resident until trimmed
    return psutil.Process().memory_info().rss

manager = ModelManager(sys.argv[1], catalog_dirs=[sys.argv[2]])
manager.load("warmup", device="cpu")  # lazy imports and caches of the loading path, not counted
manager.unload("warmup")
before = rss()
model = manager.load("big", device="cpu")
ref = weakref.ref(model.model)
loaded = rss()
del model
unloaded = manager.unload("big")
after = rss()
kept = manager.load("big", device="cpu")  # a leak on purpose: the measurement must see it
manager.unload("big")
leaked = rss()
print(json.dumps({"before": before, "loaded": loaded, "after": after, "leaked": leaked,
                  "unloaded": unloaded, "freed": ref() is None, "still_loaded": manager.is_loaded("big")}))
"""


def test_unload_really_frees_memory(tmp_path):
    """A RealESRGAN_x4plus-width RRDBNet (random weights, 16 of its 23 blocks: 47 MB) loaded and
    unloaded in a fresh interpreter: its RSS returns to where it was, whatever ran in this
    process before (measured there, the result would depend on the test order)."""
    import json
    import subprocess
    import sys

    from safetensors.torch import save_file

    models = tmp_path / "models"
    for name, size in (("warmup", {}), ("big", {"feat": 64, "blocks": 16})):
        (models / name).mkdir(parents=True)
        save_file(rrdbnet_state_dict(**size), str(models / name / "model.safetensors"))
    write_catalog(tmp_path / "cat", "esrgan", [
        {"name": name, "type": "esrgan", "licence": "test", "config": {"scale": 4},
         "files": file_entries(models / name)} for name in ("warmup", "big")])
    (tmp_path / "probe.py").write_text(UNLOAD_PROBE)
    result = subprocess.run([sys.executable, str(tmp_path / "probe.py"), str(models),
                             str(tmp_path / "cat")], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    m = json.loads(result.stdout.strip().splitlines()[-1])
    assert m["unloaded"] and m["freed"] and not m["still_loaded"]
    assert m["loaded"] - m["before"] > 40 * MiB  # the weights were resident
    assert m["after"] - m["before"] < 8 * MiB  # and are gone after unload
    assert m["leaked"] - m["before"] > 40 * MiB  # a kept reference shows as a leak


def test_unload_all_and_taint(tmp_path):
    manager = blob_manager(tmp_path, {"a": 1, "b": 1})
    manager.load("a", device="cpu")
    manager.load("b", device="cpu")
    assert sorted(manager.unload_all()) == ["a", "b"] and manager.loaded == {}
    manager.taint("a", "bad output")
    with pytest.raises(MLPlatformError, match="tainted: bad output"):
        manager.load("a", device="cpu")
    manager.untaint("a")
    manager.load("a", device="cpu")


def test_esrgan_loads_through_spandrel_and_frees(tiny_models):
    models, catalog = tiny_models
    manager = ModelManager(models, catalog=load_catalog([catalog], packaged=False))
    model = manager.load("tiny_esrgan", device="cpu", dtype="float16")  # fp16 on CPU -> fp32
    assert model.scale == 4 and model.dtype == torch.float32
    ref = weakref.ref(model.model)
    del model
    manager.unload("tiny_esrgan")
    assert ref() is None


def test_pickle_needs_an_opt_in(tmp_path):
    from argparse import Namespace  # what old training scripts pickled beside their weights

    models = tmp_path / "models"
    (models / "p").mkdir(parents=True)
    state = rrdbnet_state_dict()
    torch.save({"params_ema": state, "args": Namespace(scale=4)}, models / "p" / "w.pth")
    from mlplatform.api import sha256_file

    write_catalog(tmp_path / "cat", "esrgan", [{
        "name": "p", "type": "esrgan", "licence": "test",
        "files": [{"path": "w.pth", "sha256": sha256_file(models / "p" / "w.pth")}]}])
    catalog = load_catalog([tmp_path / "cat"], packaged=False)
    with pytest.raises(UnsafeModelError, match="weights_only=True refused it") as info:
        ModelManager(models, catalog=catalog).load("p", device="cpu")
    assert "manager.allow_pickle=[p]" in info.value.fix
    model = ModelManager(models, catalog=catalog, allow_pickle=["p"]).load("p", device="cpu")
    assert model.scale == 4


def test_transformers_bin_weights_load_tensors_only(tmp_path, tiny_models):
    """A save_pretrained directory with pytorch_model.bin (as BLIP base ships on the hub) loads
    with torch.load(weights_only=True), the same weights as the safetensors twin, no opt-in; a
    .bin that needs more than tensors is refused unless the entry opts in."""
    from argparse import Namespace

    from safetensors.torch import load_file

    from mlplatform.api import sha256_file

    models = tmp_path / "models"
    make_tiny_blip(models / "bin_blip")  # the hub's older layout: a torch.save'd state dict
    safetensors = models / "bin_blip" / "model.safetensors"
    state = load_file(str(safetensors))
    safetensors.unlink()
    torch.save(state, models / "bin_blip" / "pytorch_model.bin")
    torch.save({**state, "args": Namespace(x=1)}, models / "bin_blip" / "unsafe.bin")
    (models / "pickled_blip").mkdir()
    for path in (models / "bin_blip").iterdir():
        if path.name != "unsafe.bin":
            (models / "pickled_blip" / path.name).write_bytes(path.read_bytes())
    (models / "bin_blip" / "unsafe.bin").replace(models / "pickled_blip" / "pytorch_model.bin")
    entries = [{"name": name, "type": "blip", "licence": "test",
                "files": [{"path": p.name, "sha256": sha256_file(p)}
                          for p in sorted((models / name).iterdir())]}
               for name in ("bin_blip", "pickled_blip")]
    write_catalog(tmp_path / "cat", "blip", entries)
    tiny_dir, tiny_catalog = tiny_models
    catalog = load_catalog([tmp_path / "cat"], packaged=False)
    from_bin = ModelManager(models, catalog=catalog).load("bin_blip", device="cpu").model
    from_safetensors = ModelManager(
        tiny_dir, catalog=load_catalog([tiny_catalog], packaged=False)
    ).load("tiny_blip", device="cpu").model
    for (name, a), (_, b) in zip(from_bin.state_dict().items(), from_safetensors.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name

    with pytest.raises(UnsafeModelError, match="weights_only=True refused it") as info:
        ModelManager(models, catalog=catalog).load("pickled_blip", device="cpu")
    assert "manager.allow_pickle=[pickled_blip]" in info.value.fix
    opted_in = ModelManager(models, catalog=catalog, allow_pickle=["pickled_blip"])
    assert opted_in.load("pickled_blip", device="cpu").model is not None


def test_tiled_equals_untiled(tiny_models):
    models, catalog = tiny_models
    manager = ModelManager(models, catalog=load_catalog([catalog], packaged=False))
    model = manager.load("tiny_esrgan", device="cpu")
    x = torch.rand(1, 3, 45, 70, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        whole = model(x)
        tiled = upscale_tiled(model, x, 4, tile=32, overlap=24)
        seams = upscale_tiled(model, x, 4, tile=32, overlap=0)
    assert tiled.shape == whole.shape == (1, 3, 180, 280)
    assert torch.allclose(tiled, whole, atol=1e-5)
    assert (seams - whole).abs().max() > 1e-3  # without overlap the tiles' edges differ


def test_out_of_memory_halves_the_tile():
    seen = []

    def run(x):
        seen.append(max(x.shape[-2:]))
        if max(x.shape[-2:]) > 40:
            raise torch.OutOfMemoryError("fake")
        return x.repeat_interleave(2, -1).repeat_interleave(2, -2)

    x = torch.rand(1, 3, 64, 64)
    out, tile = upscale_with_fallback(run, x, 2, tile=128, overlap=4)
    assert tile == 32 and out.shape == (1, 3, 128, 128)
    assert torch.equal(out, x.repeat_interleave(2, -1).repeat_interleave(2, -2))


@pytest.mark.parametrize("mode, expected, suffix", [
    ("L", "L", ".png"), ("LA", "LA", ".png"), ("I;16", "I;16", ".png"), ("I;16", None, ".tiff")])
def test_upscale_task_keeps_grayscale_and_refuses_16_bit_non_png(tiny_models, tmp_path, mode,
                                                                  expected, suffix):
    import numpy as np
    from mlplatform_managers import TaskContext
    from mlplatform_managers.schemas import UpscaleTaskConfig
    from mlplatform_managers.tasks.upscale import UpscaleTask
    from PIL import Image

    from mlplatform.api import ConfigError

    models, catalog = tiny_models
    manager = ModelManager(models, catalog=load_catalog([catalog], packaged=False))
    source = Image.fromarray(np.full((12, 10), 128, dtype=np.uint8), "L").convert(mode)
    source.save(tmp_path / f"g{suffix}")
    ctx = TaskContext(manager=manager, model="tiny_esrgan", device="cpu", dtype="float32",
                      seed=0, output_dir=tmp_path)
    options = UpscaleTaskConfig(name="upscale", input=str(tmp_path / f"g{suffix}"), tile=0)
    if expected is None:
        with pytest.raises(ConfigError, match="16-bit images are read as PNG only"):
            UpscaleTask().run(ctx, options)
        return
    result = UpscaleTask().run(ctx, options)
    with Image.open(result["output"]) as image:
        assert image.mode == expected and image.size == (40, 48)


def test_hf_entry_loads_from_the_hub_cache_offline(tiny_models, tmp_path, monkeypatch):
    """A Hugging Face entry (like the shipped CLIP ViT-L/14) found in huggingface_hub's cache
    layout: verified by sha256 and loaded by the clip manager without any network."""
    import shutil


    models, _catalog = tiny_models
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo_cache = tmp_path / "hf" / "models--test--tiny-clip"
    snapshot = repo_cache / "snapshots" / revision
    shutil.copytree(models / "tiny_clip", snapshot)
    (repo_cache / "refs").mkdir()
    (repo_cache / "refs" / "main").write_text(revision)
    files = file_entries(snapshot)
    write_catalog(tmp_path / "cat", "clip", [{
        "name": "hub_clip", "type": "clip", "licence": "test", "files": files,
        "download": [{"file_name": f["path"], "hf_repo": "test/tiny-clip",
                      "hf_filename": f["path"], "hf_revision": "main"} for f in files]}])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    manager = ModelManager(tmp_path / "models", hf_cache_dir=str(tmp_path / "hf"),
                           catalog=load_catalog([tmp_path / "cat"], packaged=False))
    assert manager.status(manager.entry("hub_clip")) == "available"
    clip = manager.load("hub_clip", device="cpu")
    assert clip.model.config.projection_dim == 16
    manager.unload("hub_clip")
    (snapshot / "config.json").write_text("{}")  # tampered in the cache: refused, not quarantined
    from mlplatform_managers import HashMismatchError

    with pytest.raises(HashMismatchError, match="config.json"):
        manager.load("hub_clip", device="cpu")
    assert (snapshot / "config.json").exists()


def hub_cache_like_huggingface_hub(source, cache, repo, commit):
    """`source`'s files in huggingface_hub's cache layout: content in blobs/<ETag> (sha256 for
    the LFS-sized weights, git blob sha1 for small text files), snapshots/<commit>/<file>
    linking to it."""
    import hashlib
    import os
    import subprocess

    repo_cache = cache / f"models--{repo.replace('/', '--')}"
    (repo_cache / "blobs").mkdir(parents=True)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        if path.suffix == ".safetensors":
            etag = hashlib.sha256(path.read_bytes()).hexdigest()
        else:  # git's own object id, computed by git, not by the code under test
            etag = subprocess.run(["git", "hash-object", str(path)], capture_output=True,
                                  text=True, check=True).stdout.strip()
        (repo_cache / "blobs" / etag).write_bytes(path.read_bytes())
        link = repo_cache / "snapshots" / commit / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(repo_cache / "blobs" / etag, link.parent))
    return repo_cache


def test_commit_pinned_hub_entry_is_verified_against_the_hub_hashes(tiny_models, tmp_path,
                                                                     monkeypatch):
    """No sha256 in the catalog and no allow_unhashed: pinned to a commit, every file is checked
    against the hash the hub published for it (the blob's name in the cache), offline."""
    from mlplatform_managers import HashMismatchError

    models, _catalog = tiny_models
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_cache = hub_cache_like_huggingface_hub(models / "tiny_clip", tmp_path / "hf",
                                                "test/tiny-clip", commit)
    files = [{"path": f["path"]} for f in file_entries(models / "tiny_clip")]
    assert any(f["path"].endswith(".safetensors") for f in files) and len(files) > 1

    def catalog(revision):
        write_catalog(tmp_path / revision[:4], "clip", [{
            "name": "hub_clip", "type": "clip", "licence": "test", "files": files,
            "download": [{"file_name": f["path"], "hf_repo": "test/tiny-clip",
                          "hf_filename": f["path"], "hf_revision": revision} for f in files]}])
        return load_catalog([tmp_path / revision[:4]], packaged=False)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    manager = ModelManager(tmp_path / "models", hf_cache_dir=str(tmp_path / "hf"),
                           catalog=catalog(commit))
    assert manager.entry("hub_clip").unhashed_files == []
    assert manager.load("hub_clip", device="cpu").model.config.projection_dim == 16
    manager.unload("hub_clip")
    (repo_cache / "refs").mkdir()
    (repo_cache / "refs" / "main").write_text(commit)
    by_branch = ModelManager(tmp_path / "models", hf_cache_dir=str(tmp_path / "hf"),
                             catalog=catalog("main"))  # a branch moves: no hub hash to trust
    with pytest.raises(UnsafeModelError, match="manager.allow_unhashed=\\[hub_clip\\]"):
        by_branch.load("hub_clip", device="cpu")
    config = repo_cache / "snapshots" / commit / "config.json"
    blob = config.resolve()
    blob.write_bytes(blob.read_bytes().replace(b"16", b"17", 1))  # corrupted in the cache
    with pytest.raises(HashMismatchError, match="the hub published " + blob.name):
        manager.load("hub_clip", device="cpu")
    config.unlink()
    config.write_bytes(blob.read_bytes())  # a plain copy: nothing says what the hub published
    with pytest.raises(UnsafeModelError, match="not a huggingface_hub cache file"):
        manager.load("hub_clip", device="cpu")
