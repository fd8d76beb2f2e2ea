"""Smoke test of the compile benchmark: `run.py --quick` end to end in a subprocess."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent / "run.py"
FIELDS = {
    "benchmark": str, "builder": str, "backend": str, "dtype": str, "shape": str, "device": str,
    "device_name": str, "torch_version": str, "status": str,
}
NUMBERS = ("median_ms", "peak_mem_mb", "speedup_vs_eager", "max_rel_error", "max_abs_error")


def _run(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    return subprocess.run([sys.executable, str(RUN), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_quick_writes_json_markdown_png(tmp_path):
    out = tmp_path / "results"
    proc = _run("--device", "cpu", "--quick", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = json.loads((out / "compile_cpu_quick.json").read_text())
    assert (out / "compile_cpu_quick.md").read_text().count("| vae_decode |") == len(records)
    png = (out / "compile_cpu_quick.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000

    by_backend = {r["backend"]: r for r in records}
    assert set(by_backend) == {"eager", "inductor", "aot_inductor", "aitemplate"}
    for r in records:
        for field, kind in FIELDS.items():
            if r["status"] == "skipped" and field == "shape":
                continue
            assert isinstance(r.get(field), kind), (field, r)
        assert r["benchmark"] == "compile" and r["device"] == "cpu"
    for name in ("eager", "inductor", "aot_inductor"):
        r = by_backend[name]
        assert r["status"] == "ok", r
        assert r["random_weights"] is True
        for field in NUMBERS:
            assert isinstance(r[field], (int, float)) and math.isfinite(r[field]), (field, r)
        assert r["median_ms"] > 0 and r["peak_mem_mb"] > 0
        assert r["parity_ok"] is True, r
        assert len(r["times_ms"]) == r["repeats"]
    assert by_backend["eager"]["speedup_vs_eager"] == 1.0
    assert by_backend["inductor"]["compile_s"] > 0
    # AITemplate never runs on CPU: skipped, with the reason
    skipped = by_backend["aitemplate"]
    assert skipped["status"] == "skipped" and "aitemplate" in skipped["reason"].lower()

    # comparing with itself: no regression; with a baseline twice as fast: exit 1
    same = _run("--device", "cpu", "--quick", "--out", str(tmp_path / "again"), "--backends", "eager",
                "--baseline", str(out / "compile_cpu_quick.json"), "--threshold", "10", cwd=tmp_path)
    assert same.returncode == 0, same.stdout[-2000:] + same.stderr[-2000:]
    fast = [dict(r, median_ms=r["median_ms"] / 2) if r.get("median_ms") else r for r in records]
    baseline = tmp_path / "fast_baseline.json"
    baseline.write_text(json.dumps(fast))
    compare = RUN.parent / "compare.py"
    proc = subprocess.run([sys.executable, str(compare), str(out / "compile_cpu_quick.json"),
                           str(baseline)], capture_output=True, text=True)
    assert proc.returncode == 1 and "REGRESSED" in proc.stdout, proc.stdout + proc.stderr


def test_cuda_without_cuda_skips_cleanly(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    proc = _run("--device", "cuda", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 0
    assert "skipped: no CUDA" in proc.stdout
    assert not (tmp_path / "r").exists()
