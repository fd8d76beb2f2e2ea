"""Smoke test of the text-diffusion benchmark: `run.py --quick` end to end in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent / "run.py"


@pytest.mark.slow  # about 30-40 s on 2 CPU cores
def test_quick_writes_json_markdown_png(tmp_path):
    out = tmp_path / "results"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((out / "textdiffusion_cpu_quick.json").read_text())
    assert record["benchmark"] == "textdiffusion" and record["quick"] is True
    assert record["training"]["vae"]["steps_per_s"] > 0 and record["training"]["prior"]["steps_per_s"] > 0
    sampling = record["sampling"]
    for name in ("ddim", "ddpm"):
        assert sampling[name]["sentences_per_s"] > 0 and sampling[name]["latent_sentences_per_s"] > 0
        metrics = sampling[name]["metrics"]
        for metric in ("reconstruction_bleu", "self_bleu", "distinct_1", "distinct_2", "novelty", "grammatical"):
            assert metrics[metric]["std"] >= 0 and len(metrics[metric]["values"]) == sampling["n_sets"]
    assert 0 <= sampling["random_latents_grammatical"]["mean"] <= 1
    assert sampling["speedup_ddim_vs_ddpm"] > 0 and sampling["latent_speedup_ddim_vs_ddpm"] > 0
    kv = record["kv_cache"]
    assert kv["tokens"] == 64 and kv["speedup"] > 0 and kv["identical_tokens"] is True
    assert set(record["targets"]) == {"ddim_speedup_ge_10x", "ddim_quality_within_spread", "kv_speedup_ge_3x"}
    table = (out / "textdiffusion_cpu_quick.md").read_text()
    assert "| novelty |" in table and "KV-cached" in table and table in proc.stdout
    png = (out / "textdiffusion_cpu_quick.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
