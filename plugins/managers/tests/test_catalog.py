"""The catalog: the packaged files validate, user directories override by name, and every schema
mistake is an error naming the file, the entry and the field; paths cannot leave the models dir."""

from __future__ import annotations

import json
import os
from importlib import resources

import pytest
from managers_helpers import write_catalog
from mlplatform_managers import CatalogError, ModelManager, load_catalog
from mlplatform_managers.catalog import CATALOG_PATH_ENV
from mlplatform_managers.errors import UnsafeModelError


def entry(**over):
    base = {"name": "m", "type": "esrgan", "licence": "MIT",
            "files": [{"path": "w.safetensors", "sha256": "a" * 64}]}
    base.update(over)
    return base


def test_packaged_catalog_validates_and_has_real_entries(monkeypatch):
    monkeypatch.delenv(CATALOG_PATH_ENV, raising=False)
    catalog = load_catalog()
    x4 = catalog.get("RealESRGAN_x4plus")
    assert x4.files[0].sha256 == "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1"
    assert x4.download[0].url.startswith("https://github.com/xinntao/Real-ESRGAN/releases/")
    assert {"clip", "esrgan", "vae", "blip", "safety_checker", "gfpgan"} <= set(catalog.types())
    for e in catalog:  # an entry either has every hash or needs the explicit opt-out
        assert e.licence and e.download
        if e.unhashed_files:
            assert not e.allow_unhashed, f"{e.name} must not ship pre-opted-out"
    # hub entries are pinned to a commit, so the hub's published hash checks every file
    hub = [e for e in catalog if e.hf_snapshot]
    assert len(hub) >= 6 and [e.name for e in hub if not e.hub_pinned] == []
    assert [e.name for e in catalog if e.unhashed_files] == ["facexlib_retinaface_mobilenet"]


def test_every_packaged_entry_has_a_model_option(monkeypatch):
    monkeypatch.delenv(CATALOG_PATH_ENV, raising=False)
    options = {f.name[:-5] for f in resources.files("mlplatform_managers.conf.model").iterdir()
               if f.name.endswith(".yaml")}
    assert options == {e.name for e in load_catalog()} | {"none"}


def test_user_catalog_overrides_by_name_env_then_option(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    write_catalog(first, "esrgan", [entry(name="RealESRGAN_x4plus", description="mine")])
    write_catalog(second, "esrgan", [entry(name="RealESRGAN_x4plus", description="later")])
    monkeypatch.setenv(CATALOG_PATH_ENV, str(first))
    assert load_catalog().get("RealESRGAN_x4plus").description == "mine"
    catalog = load_catalog([second])
    assert catalog.get("RealESRGAN_x4plus").description == "later"
    assert catalog.sources["RealESRGAN_x4plus"].endswith(os.path.join("b", "esrgan.json"))


@pytest.mark.parametrize("bad, field, words", [
    (entry(files=[{"path": "w", "sha256": "xyz"}]), "files.0.sha256", "64 hexadecimal"),
    (entry(files=[{"path": "../evil.pth"}]), "files.0.path", "'..'"),
    (entry(files=[{"path": "/etc/passwd"}]), "files.0.path", "absolute"),
    (entry(download=[{"file_name": "w.safetensors", "url": "file:///etc/passwd"}]),
     "download.0", "http:// or https://"),
    (entry(download=[{"file_name": "w.safetensors", "url": "ftp://x/y"}]), "download.0", "https://"),
    (entry(licence=None), "licence", "string"),
    (entry(colour="red"), "colour", "Extra inputs"),
    (entry(config={"scale": "big"}), "config", "scale: Input should be a valid integer"),
])
def test_schema_errors_name_file_entry_and_field(tmp_path, bad, field, words):
    path = write_catalog(tmp_path, "esrgan", [entry(name="good"), bad])
    with pytest.raises(CatalogError) as info:
        load_catalog([tmp_path], packaged=False)
    message = info.value.problem
    assert str(path) in message and "entry #1 'm'" in message
    assert f"field {field}" in message and words in message


def test_invalid_json_and_unknown_requires(tmp_path):
    (tmp_path / "esrgan.json").write_text('{"format": 1, "type": "esrgan", "models": [}')
    with pytest.raises(CatalogError, match=r"not valid JSON \(line 1"):
        load_catalog([tmp_path], packaged=False)
    write_catalog(tmp_path, "esrgan", [entry(requires=["face_detectr"])])
    with pytest.raises(CatalogError, match="requires: unknown model 'face_detectr'"):
        load_catalog([tmp_path], packaged=False)


def test_unknown_model_names_the_closest_match(monkeypatch):
    monkeypatch.delenv(CATALOG_PATH_ENV, raising=False)
    with pytest.raises(CatalogError, match="did you mean 'RealESRGAN_x4plus'"):
        load_catalog().get("RealESRGAN_x4plu")


def test_symlink_out_of_the_models_dir_is_refused(tmp_path):
    models, outside = tmp_path / "models", tmp_path / "outside"
    outside.mkdir()
    (outside / "w.safetensors").write_bytes(b"x")
    (models / "m").mkdir(parents=True)
    (models / "m" / "w.safetensors").symlink_to(outside / "w.safetensors")
    write_catalog(tmp_path / "cat", "esrgan", [entry()])
    manager = ModelManager(models, catalog=load_catalog([tmp_path / "cat"], packaged=False))
    with pytest.raises(UnsafeModelError, match="outside the models directory"):
        manager.download("m")
    assert manager.status(manager.entry("m")) == "unsafe"


def test_catalog_file_must_keep_one_type(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps(
        {"format": 1, "type": "clip", "models": [entry()]}))
    with pytest.raises(CatalogError, match="one type per file"):
        load_catalog([tmp_path], packaged=False)
