"""Downloads against a loopback HTTP server: resume with Range, wrong hash quarantined, 404, a
stalled server timed out and retried, unhashed files refused unless opted out, offline silent."""

from __future__ import annotations

import hashlib
import os

import pytest
from managers_helpers import write_catalog
from mlplatform_managers import (
    DownloadError,
    DownloadPolicy,
    HashMismatchError,
    ModelManager,
    UnsafeModelError,
    fetch_url,
    load_catalog,
)

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(autouse=True)
def online(monkeypatch):
    """Each test sets offline mode itself (the loopback server is the only network touched)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


FAST = DownloadPolicy(timeout=0.5, retries=2, backoff=0.01, chunk_size=16_384, progress=False)


def test_interrupted_transfer_resumes_with_range(http_server, tmp_path):
    http_server.files["/w.bin"] = DATA
    http_server.behaviour["/w.bin"] = "cut"
    dest = tmp_path / "models" / "w.bin"
    fetch_url(f"{http_server.url}/w.bin", dest, sha256=SHA, size=len(DATA),
              models_dir=tmp_path / "models", policy=FAST)
    assert dest.read_bytes() == DATA and not dest.with_name("w.bin.part").exists()
    ranges = [r for p, r in http_server.requests if p == "/w.bin"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(DATA) // 2}-"


def test_wrong_hash_is_quarantined_and_never_available(http_server, tmp_path):
    http_server.files["/w.bin"] = DATA
    models = tmp_path / "models"
    dest = models / "m" / "w.bin"
    with pytest.raises(HashMismatchError, match="quarantined"):
        fetch_url(f"{http_server.url}/w.bin", dest, sha256="0" * 64, size=None,
                  models_dir=models, policy=FAST)
    assert not dest.exists() and not dest.with_name("w.bin.part").exists()
    assert len(list((models / ".quarantine").glob("w.bin.*.reason.txt"))) == 1


def test_404_is_final_and_clear(http_server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_url(f"{http_server.url}/missing.bin", tmp_path / "x", sha256=SHA, size=None,
                  models_dir=tmp_path, policy=FAST)
    assert len(http_server.requests) == 1  # not retried


def test_stalled_server_times_out_and_is_retried(http_server, tmp_path):
    http_server.files["/w.bin"] = DATA
    http_server.behaviour["/w.bin"] = "slow"
    dest = tmp_path / "w.bin"
    fetch_url(f"{http_server.url}/w.bin", dest, sha256=SHA, size=None, models_dir=tmp_path,
              policy=FAST)
    assert dest.read_bytes() == DATA
    assert len([p for p, _ in http_server.requests if p == "/w.bin"]) == 2


def test_gives_up_after_retries_keeping_the_part(http_server, tmp_path):
    http_server.files["/w.bin"] = DATA
    http_server.behaviour["/w.bin"] = "slow"
    with pytest.raises(DownloadError, match="after 1 attempt"):
        fetch_url(f"{http_server.url}/w.bin", tmp_path / "w.bin", sha256=SHA, size=None,
                  models_dir=tmp_path, policy=DownloadPolicy(timeout=0.3, retries=0, progress=False))


def test_not_enough_disk_space_is_refused_before_downloading(http_server, tmp_path):
    with pytest.raises(DownloadError, match="not enough disk space"):
        fetch_url(f"{http_server.url}/w.bin", tmp_path / "w.bin", sha256=SHA, size=1 << 60,
                  models_dir=tmp_path, policy=FAST)
    assert http_server.requests == []


def _manager(tmp_path, http_server, **entry_fields):
    fields = {"name": "m", "type": "esrgan", "licence": "MIT",
              "files": [{"path": "w.bin", "sha256": SHA, "size": len(DATA)}],
              "download": [{"file_name": "w.bin", "url": f"{http_server.url}/w.bin"}]}
    fields.update(entry_fields)
    write_catalog(tmp_path / "cat", "esrgan", [fields])
    http_server.files["/w.bin"] = DATA
    return lambda **kw: ModelManager(
        tmp_path / "models", catalog=load_catalog([tmp_path / "cat"], packaged=False),
        download_policy=FAST, **kw)


def test_manager_download_verifies_and_reports_availability(http_server, tmp_path):
    manager = _manager(tmp_path, http_server)(offline=False)
    assert manager.status(manager.entry("m")) == "missing"
    manager.download("m")
    assert manager.status(manager.entry("m")) == "available"
    assert manager.available() == ["m"]


def test_unhashed_file_refused_unless_opted_out(http_server, tmp_path):
    make = _manager(tmp_path, http_server, files=[{"path": "w.bin"}])
    with pytest.raises(UnsafeModelError, match=r"no sha256.*") as info:
        make(offline=False).download("m")
    assert "manager.allow_unhashed=[m]" in info.value.fix
    assert http_server.requests == []
    make(offline=False, allow_unhashed=["m"]).download("m")
    assert (tmp_path / "models" / "m" / "w.bin").read_bytes() == DATA


def test_offline_never_touches_the_network(http_server, tmp_path, monkeypatch):
    make = _manager(tmp_path, http_server)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline mode is on"):
        make(offline=None).download("m")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(DownloadError, match="offline mode is on"):
        make(offline=True).download("m")
    assert http_server.requests == []


def test_hf_entry_offline_is_a_clear_error_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    manager = ModelManager(tmp_path / "models", hf_cache_dir=str(tmp_path / "hf"))
    with pytest.raises(DownloadError, match="not in the Hugging Face cache and offline mode is on"):
        manager.download("clip_vit_large_patch14")
