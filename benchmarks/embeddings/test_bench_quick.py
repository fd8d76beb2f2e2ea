"""Smoke test of the embeddings benchmark: `run.py --quick` end to end in a subprocess (~50 s
on 2 CPU cores: each trainer in its own fresh worker process)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
RUN = HERE / "run.py"
sys.path.insert(0, str(HERE))


def test_docstring_pairs_are_deterministic_and_disjoint():
    from docdata import make_pairs

    train, held, info = make_pairs()
    again = make_pairs()
    assert (train, held, info) == again
    assert info["train_pairs"] > 500 and info["held_out_pairs"] > 100
    assert not {r["query"] for r in train} & {r["query"] for r in held}
    assert not {r["positive"] for r in train} & {r["positive"] for r in held}


@pytest.mark.slow
def test_quick_writes_json_markdown_png(tmp_path):
    out = tmp_path / "results"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--out", str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "embeddings_cpu_quick.json").read_text())
    meta, records = data["meta"], data["records"]
    assert meta["quick"] and meta["torch_version"] and meta["data"]["sha256_16"]
    assert [r["trainer"] for r in records] == ["st", "ours"]
    for r in records:
        assert r["status"] == "ok", r
        assert r["steps"] == meta["steps"]
        assert r["samples_per_s"] > 0 and r["peak_rss_mb"] > 100
        for stage in ("before", "after"):
            for key in ("ndcg@10", "recall@1", "recall@10"):
                assert 0.0 <= r[stage][key] <= 1.0 and not math.isnan(r[stage][key])
        assert r["ratio_samples_per_s"] > 0 and r["ratio_peak_rss"] > 0
    # same model and held-out data: both start from the same retrieval quality
    assert records[0]["before"]["ndcg@10"] == pytest.approx(records[1]["before"]["ndcg@10"], abs=1e-3)
    md = (out / "embeddings_cpu_quick.md").read_text()
    assert "| sentence-transformers (MNRL) |" in md and "| ours |" in md
    png = (out / "embeddings_cpu_quick.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
