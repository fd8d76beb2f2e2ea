"""Model sources: a local directory or a Hugging Face Hub repo id, resolved the same way everywhere.

`HF_HUB_OFFLINE=1` is honoured: offline, only what is already on disk or in the hub cache is used,
and a missing model is an error naming every place that was looked at.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import ModelSourceError


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_model_source(
    source: str | os.PathLike,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    required_file: str | None = "config.json",
) -> Path:
    """Return a local directory holding the model (and `subfolder` within it).

    A path that exists is used as is; anything else is treated as a hub repo id and fetched
    (or found in the cache when offline).
    """
    text = str(source)
    local = Path(text).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelSourceError(
                f"model source {text!r} is a file, not a model directory",
                "point at the directory that holds config.json (and the weights)",
            )
        return _check_dir(local, subfolder, required_file, text)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or not text:
        raise ModelSourceError(
            f"model directory {text!r} does not exist",
            "check the path, or give a Hugging Face repo id such as 'org/name'",
        )
    return _fetch_from_hub(text, subfolder=subfolder, revision=revision, required_file=required_file)


def read_json_file(path: str | os.PathLike, what: str = "config") -> dict[str, Any]:
    """A user's JSON object file (a model's config.json, say), or a ModelSourceError naming the
    file, the line and column of a syntax error, and the fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ModelSourceError(f"{what} file {path} does not exist", "check the path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelSourceError(
            f"{what} file {path} cannot be read: {exc}",
            "check the file's permissions and that it is a UTF-8 text file",
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelSourceError(
            f"{what} file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg})",
            "fix or re-download the file (save_pretrained writes a valid one)",
        ) from exc
    if not isinstance(data, dict):
        raise ModelSourceError(
            f"{what} file {path} holds a JSON {type(data).__name__}, not an object",
            "fix or re-download the file (save_pretrained writes a valid one)",
        )
    return data


def _check_dir(root: Path, subfolder: str | None, required_file: str | None, label: str) -> Path:
    directory = root / subfolder if subfolder else root
    if not directory.is_dir():
        raise ModelSourceError(
            f"model {label!r} has no subfolder {subfolder!r} (looked in {directory})",
            "check model_kwargs.subfolder, or drop it if the model is at the top level",
        )
    if required_file and not (directory / required_file).is_file():
        raise ModelSourceError(
            f"model {label!r} has no {required_file} in {directory}",
            "point at a directory saved with save_pretrained (it writes config.json)",
        )
    return directory


def _fetch_from_hub(
    repo_id: str, *, subfolder: str | None, revision: str | None, required_file: str | None
) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelSourceError(
            f"{repo_id!r} is not a local directory and huggingface_hub is not installed",
            "pip install huggingface_hub, or pass a local directory",
        ) from exc
    offline = hub_offline()
    patterns = None
    if subfolder:
        patterns = [f"{subfolder}/*"]
    try:
        root = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=patterns,
                local_files_only=offline,
            )
        )
    except Exception as exc:  # hub errors come in many classes; all mean "not available"
        where = "the local Hugging Face cache" if offline else "the Hugging Face Hub and the local cache"
        fix = (
            "download it once with network access (unset HF_HUB_OFFLINE), or pass a local directory"
            if offline
            else "check the repo id and revision, your network, and HF_TOKEN for gated models"
        )
        raise ModelSourceError(
            f"model {repo_id!r}"
            + (f" (subfolder {subfolder!r})" if subfolder else "")
            + f" was not found as a local directory nor in {where}"
            + (" [HF_HUB_OFFLINE=1]" if offline else "")
            + f": {type(exc).__name__}",
            fix,
        ) from exc
    return _check_dir(root, subfolder, required_file, repo_id)
