"""Artifacts on disk: atomic writes, manifest.json with checksums, verification on load.

Every plugin writes compiled modules, checkpoints and exports through these helpers, so an
interrupted write never leaves a half file under the final name and a damaged file is caught
before it is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ArtifactError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large weights do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def staged_directory(final_dir: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it into place when the block succeeds.

    A failure leaves any earlier directory at `final_dir` untouched.
    """
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.parent))
    try:
        yield staging
        if final.exists():
            retired = final.with_name(f".{final.name}.{os.getpid()}.{time.time_ns()}.old")
            os.replace(final, retired)
            os.replace(staging, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _payload_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME and not p.name.startswith(".")
    )


def write_manifest(directory: str | os.PathLike, info: dict[str, Any]) -> dict[str, Any]:
    """Write manifest.json: `info` plus the size and sha256 of every file in `directory`."""
    from . import __version__

    root = Path(directory)
    files = {
        p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in _payload_files(root)
    }
    manifest = {
        **info,
        "manifest_format": MANIFEST_FORMAT,
        "mlplatform_version": __version__,
        "created_unix": int(time.time()),
        "files": files,
    }
    atomic_write_json(root / MANIFEST_NAME, manifest)
    return manifest


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(
            f"no {MANIFEST_NAME} in {directory}: this is not a complete artifact",
            "rebuild or re-export it; artifacts are only valid with their manifest",
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"{path} is not valid JSON ({exc})", "delete the artifact directory and rebuild it"
        ) from exc


def verify_artifact(directory: str | os.PathLike) -> dict[str, Any]:
    """Check every file the manifest lists (size, then sha256) and return the manifest.

    Raises ArtifactError naming the first missing, truncated or altered file.
    """
    root = Path(directory)
    manifest = read_manifest(root)
    for rel, expected in manifest.get("files", {}).items():
        path = root / rel
        fix = f"delete {root} and rebuild it (or rebuild with force=true)"
        if not path.is_file():
            raise ArtifactError(f"artifact file {path} is missing", fix)
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise ArtifactError(
                f"artifact file {path} has {size} bytes, the manifest says {expected['bytes']} "
                "(truncated or replaced)",
                fix,
            )
        if sha256_file(path) != expected["sha256"]:
            raise ArtifactError(f"artifact file {path} does not match its sha256 checksum", fix)
    return manifest
