"""The job through the real command line (Hydra composition from the packaged config groups)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_cli(tmp_path, *args):
    env = {**os.environ, "MLPLATFORM_COMPILE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mlplatform", *args, f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_build_job_from_the_command_line(tmp_path):
    proc = run_cli(
        tmp_path,
        "job=build",
        "backend=eager",
        "builder.build_kwargs.resolution=[32,48]",
        "job.benchmark_runs=1",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RANDOM WEIGHTS" in proc.stdout and "parity vs eager" in proc.stdout
    summary = json.loads((tmp_path / "run" / "build_summary.json").read_text())
    assert summary["builder"] == "vae_decode" and summary["backend"] == "eager"
    assert summary["artifact"].startswith(str(tmp_path / "cache"))


def test_command_line_errors_are_clean(tmp_path):
    proc = run_cli(tmp_path, "job=build", "backend=aitemplate")
    assert proc.returncode == 2
    assert "backend=aitemplate cannot run here" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(tmp_path, "job=build", "builder.random_weights=false")
    assert proc.returncode == 2 and "random_weights=true" in proc.stderr
