"""Shared helpers: run the real CLI in a subprocess, and make real (tiny) plugin distributions."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, extra_path: list[Path] = ()):
    """Run `python -m mlplatform ARGS` like a user would; return the CompletedProcess."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    if extra_path:
        full_env["PYTHONPATH"] = os.pathsep.join(
            [*map(str, extra_path), full_env.get("PYTHONPATH", "")]
        )
    return subprocess.run(
        [sys.executable, "-m", "mlplatform", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600,
    )


def make_distribution(
    root: Path, name: str, modules: dict[str, str], entry_points: dict[str, str], version="0.1.0"
) -> Path:
    """Write a real installed distribution (modules + .dist-info with entry points) under root."""
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        path = root / (module.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[mlplatform]"] + [f"{ep} = {target}" for ep, target in entry_points.items()]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def cli(tmp_path):
    """Run the CLI with the working directory in a temp dir (so outputs/ lands there)."""

    def _run(*args, env=None, extra_path=()):
        return run_cli(*args, cwd=tmp_path, env=env, extra_path=list(extra_path))

    return _run
