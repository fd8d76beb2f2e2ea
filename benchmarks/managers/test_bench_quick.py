"""Smoke test of the model-manager benchmark: `run.py --quick` end to end in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent / "run.py"


@pytest.mark.slow
def test_quick_writes_json_markdown_png(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--out", str(out)], cwd=tmp_path,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "managers_cpu_quick.json").read_text())
    meta, records = data["meta"], data["records"]
    assert meta["quick"] and meta["torch_version"] and "vCPU" in meta["device_name"]
    loads = [r for r in records if r["bench"] == "load"]
    assert {(r["format"], r["cache"]) for r in loads} == {
        (f, c) for f in ("safetensors", "torch.load(weights_only)") for c in ("cold", "warm page cache")}
    # the same weights both ways: the same bytes of tensor data
    assert len({r["bytes"] for r in loads}) == 1 and loads[0]["bytes"] == 8 << 20
    assert all(r["median_s"] > 0 and r["gb_per_s"] > 0 for r in loads)
    benches = {r["bench"] for r in records}
    assert benches == {"load", "manager", "eviction", "download"}
    lookup = next(r for r in records if r.get("what") == "warm lookup: load() of a loaded model")
    first = next(r for r in records if r.get("what", "").startswith("first load"))
    assert lookup["median_s"] < first["median_s"]
    download = next(r for r in records if r["bench"] == "download")
    assert download["bytes"] == 4 << 20 and download["gb_per_s"] > 0
    md = (out / "managers_cpu_quick.md").read_text()
    assert "| load | safetensors (cold) |" in md and "faster than torch.load" in md
    png = (out / "managers_cpu_quick.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
