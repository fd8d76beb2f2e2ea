"""RealESRGAN_x4plus-sized models for the benchmark: random weights in the official RRDBNet key
layout (64 features, 23 blocks, growth 32: 16.7 M parameters, 67 MB in float32), saved as
safetensors with a catalog that hashes them."""

from __future__ import annotations

import json
from pathlib import Path

FEATURES, GROWTH, BLOCKS = 64, 32, 23


def rrdbnet_state(seed: int = 0, blocks: int = BLOCKS) -> dict:
    import torch

    gen = torch.Generator().manual_seed(seed)
    state: dict = {}

    def conv(out_ch: int, in_ch: int, name: str) -> None:
        state[f"{name}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=gen) * (in_ch * 9) ** -0.5
        state[f"{name}.bias"] = torch.zeros(out_ch)

    conv(FEATURES, 3, "conv_first")
    for block in range(blocks):
        for rdb in (1, 2, 3):
            for c in range(1, 6):
                conv(GROWTH if c < 5 else FEATURES, FEATURES + (c - 1) * GROWTH,
                     f"body.{block}.rdb{rdb}.conv{c}")
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(FEATURES, FEATURES, name)
    conv(3, FEATURES, "conv_last")
    return state


def esrgan_weights(directory: Path, blocks: int = BLOCKS) -> Path:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.safetensors"
    if not path.exists():
        save_file(rrdbnet_state(blocks=blocks), str(path))
    return path


def write_esrgan_catalog(catalog: Path, models: Path, names: list[str]) -> Path:
    from mlplatform.api import sha256_file

    catalog.mkdir(parents=True, exist_ok=True)
    entries = []
    for name in names:
        path = models / name / "model.safetensors"
        entries.append({"name": name, "type": "esrgan", "licence": "benchmark (random weights)",
                        "config": {"scale": 4},
                        "files": [{"path": "model.safetensors", "sha256": sha256_file(path),
                                   "size": path.stat().st_size}]})
    out = catalog / "esrgan.json"
    out.write_text(json.dumps({"format": 1, "type": "esrgan", "models": entries}, indent=2))
    return out
