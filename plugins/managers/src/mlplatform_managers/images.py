"""Reading user images (clear errors for missing or undecodable files) and writing PNGs that
carry their generation parameters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlplatform.api import atomic_path

from .errors import InputImageError

PARAMETERS_KEY = "parameters"  # the PNG text chunk holding the JSON parameters


def load_image(path: str | Path) -> Any:
    """A decoded PIL image (fully read, so a truncated file fails here, not later)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputImageError(f"input image {path} does not exist",
                              "check the path (relative paths are taken from where you run)")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputImageError(
            f"input image {path} cannot be decoded: {exc}",
            "pass a PNG, JPEG or WebP image file (is it truncated, or not an image?)",
        ) from exc


def save_png(image: Any, path: Path, parameters: dict[str, Any]) -> Path:
    """Save `image` as PNG with `parameters` as JSON in its `parameters` text chunk, atomically."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PARAMETERS_KEY, json.dumps(parameters, sort_keys=True, default=str))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return path


def png_parameters(path: str | Path) -> dict[str, Any]:
    from PIL import Image

    with Image.open(path) as image:
        return json.loads(image.text[PARAMETERS_KEY])  # type: ignore[attr-defined]
