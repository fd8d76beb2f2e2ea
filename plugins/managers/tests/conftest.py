"""Fixtures: tiny real-architecture models saved the way real checkpoints are (an official-layout
RRDBNet state dict as safetensors; a CLIP save_pretrained directory), a user catalog describing
them with their real sha256, and a loopback HTTP server."""

from __future__ import annotations

import http.server
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from managers_helpers import (  # noqa: E402
    _Handler,
    file_entries,
    make_tiny_blip,
    make_tiny_clip,
    make_tiny_safety_checker,
    make_tiny_sd,
    rrdbnet_state_dict,
    write_catalog,
)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """(models_dir, catalog_dir) with tiny_esrgan (x4, safetensors), tiny_clip, tiny_blip and
    two tiny safety checkers (one flags everything, one nothing), every file hashed."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("managers")
    models, catalog = root / "models", root / "catalog"
    esrgan_dir = models / "tiny_esrgan"
    esrgan_dir.mkdir(parents=True)
    save_file(rrdbnet_state_dict(), str(esrgan_dir / "model.safetensors"))
    make_tiny_clip(models / "tiny_clip")
    make_tiny_blip(models / "tiny_blip")
    make_tiny_safety_checker(models / "tiny_safety_strict", -10.0)
    make_tiny_safety_checker(models / "tiny_safety_lenient", 10.0)
    write_catalog(catalog, "esrgan", [{
        "name": "tiny_esrgan", "type": "esrgan", "licence": "test", "config": {"scale": 4},
        "description": "random-weight RRDBNet (1 block, 8 features) in the official key layout",
        "files": file_entries(esrgan_dir)}])
    write_catalog(catalog, "clip", [{
        "name": "tiny_clip", "type": "clip", "licence": "test",
        "description": "random-weight CLIP (1 layer, 32 wide)",
        "files": file_entries(models / "tiny_clip")}])
    write_catalog(catalog, "blip", [{
        "name": "tiny_blip", "type": "blip", "licence": "test",
        "description": "random-weight BLIP captioner (1 layer, 32 wide, 13-word vocabulary)",
        "files": file_entries(models / "tiny_blip")}])
    write_catalog(catalog, "safety_checker", [{
        "name": name, "type": "safety_checker", "licence": "test",
        "description": "random-weight SD safety checker with fixed concept thresholds",
        "files": file_entries(models / name)}
        for name in ("tiny_safety_strict", "tiny_safety_lenient")])
    return models, catalog


@pytest.fixture
def image_file(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "input.png"
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), "RGB").save(path)
    return path


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files, server.behaviour, server.requests, server.stall = {}, {}, [], 2.0
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def cli_env(tiny_models, tmp_path):
    models, catalog = tiny_models
    return {"MLPLATFORM_LOAD_PLUGINS": "managers", "MLPLATFORM_CATALOG_PATH": str(catalog),
            "MLPLATFORM_MODELS_DIR": str(models), "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(tmp_path / "hf_home")}




@pytest.fixture(scope="session")
def tiny_sd(tiny_models, tmp_path_factory):
    """tiny_sd (a random-weight diffusers Stable Diffusion directory) in the tiny models dir, and
    a catalog directory of its own listing it (so tests not using it never build it)."""
    models, _catalog = tiny_models
    make_tiny_sd(models / "tiny_sd")
    catalog = tmp_path_factory.mktemp("sd_catalog")
    write_catalog(catalog, "stable_diffusion", [{
        "name": "tiny_sd", "type": "stable_diffusion", "licence": "test",
        "description": "random-weight SD pipeline (32/64-wide UNet and VAE, 1-layer CLIP text)",
        "files": file_entries(models / "tiny_sd")}])
    return models, catalog


@pytest.fixture
def sd_env(cli_env, tiny_sd):
    return {**cli_env, "MLPLATFORM_CATALOG_PATH": cli_env["MLPLATFORM_CATALOG_PATH"] + ":" + str(tiny_sd[1])}
