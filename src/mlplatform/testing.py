"""Helpers for testing plugins the way users meet them: the real CLI and real distributions."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

from .config import compose_config

__all__ = ["compose_config", "make_distribution", "run_cli"]


def run_cli(
    *args: str,
    cwd: str | os.PathLike,
    env: dict[str, str] | None = None,
    extra_path: Iterable[str | os.PathLike] = (),
    timeout: float = 900,
) -> subprocess.CompletedProcess:
    """Run `python -m mlplatform ARGS` in a subprocess (offline) and return the result."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    paths = [str(p) for p in extra_path]
    if paths:
        full_env["PYTHONPATH"] = os.pathsep.join([*paths, full_env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "mlplatform", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def make_distribution(
    root: str | os.PathLike,
    name: str,
    modules: dict[str, str],
    entry_points: dict[str, str],
    version: str = "0.1.0",
    files: dict[str, str] | None = None,
) -> Path:
    """Write an installed distribution (modules plus a .dist-info with `mlplatform` entry points)
    under `root`; put `root` on PYTHONPATH to install it. `files` are other package data by
    relative path (e.g. a config group's YAML: "my_plugin/conf/backend/x.yaml")."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        path = root / (module.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    for relative, text in (files or {}).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[mlplatform]", *(f"{ep} = {target}" for ep, target in entry_points.items())]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root
