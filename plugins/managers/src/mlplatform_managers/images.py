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


# --- 16-bit PNGs: Pillow reads 16-bit RGB(A) PNGs as 8-bit, so they go through pypng ---------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_bit_depth(path: str | Path) -> int | None:
    """The bit depth in a PNG's header (None for other formats)."""
    with open(path, "rb") as handle:
        head = handle.read(26)
    if len(head) < 26 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24]


def load_array(path: str | Path) -> tuple[Any, int, bool, bool]:
    """(float32 array H x W x C in [0, 1], bit depth 8 or 16, greyscale, has alpha) of an image;
    C is 1 or 3 colour channels plus alpha when present. 16-bit PNGs keep their 16 bits."""
    import numpy as np

    path = Path(path).expanduser()
    image = load_image(path)  # existence and decodability checked (and the 8-bit path)
    if png_bit_depth(path) == 16:
        import png

        try:
            width, height, rows, info = png.Reader(filename=str(path)).asDirect()
            array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
        except (png.Error, OSError, ValueError) as exc:
            raise InputImageError(f"input image {path} cannot be decoded: {exc}",
                                  "pass an intact PNG") from exc
        array = array.reshape(height, width, info["planes"]).astype(np.float32) / 65535.0
        return array, 16, bool(info["greyscale"]), bool(info["alpha"])
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise InputImageError(f"input image {path} is a {image.mode} image that is not a PNG",
                              "16-bit images are read as PNG only; convert it to a 16-bit PNG")
    grey = image.mode in ("1", "L", "LA")
    alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info)
    mode = ("LA" if alpha else "L") if grey else ("RGBA" if alpha else "RGB")
    array = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    return (array[..., None] if array.ndim == 2 else array), 8, grey, alpha


def save_array(array: Any, path: Path, parameters: dict[str, Any], bit_depth: int = 8) -> Path:
    """Save a float array (H x W x C in [0, 1]; C = 1, 2 (grey + alpha), 3 or 4) as an 8- or
    16-bit PNG carrying `parameters`, atomically."""
    import numpy as np

    height, width, channels = array.shape
    clipped = np.clip(array, 0.0, 1.0)
    if bit_depth == 8:
        from PIL import Image

        pixels = (clipped * 255.0).round().astype(np.uint8)
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
        return save_png(Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode),
                        path, parameters)
    import io

    import png

    pixels = (clipped * 65535.0).round().astype(np.uint16)
    buffer = io.BytesIO()
    png.Writer(width, height, greyscale=channels in (1, 2), alpha=channels in (2, 4),
               bitdepth=16).write(buffer, pixels.reshape(height, width * channels))
    chunks = list(png.Reader(bytes=buffer.getvalue()).chunks())
    text = PARAMETERS_KEY.encode() + b"\0" + json.dumps(parameters, sort_keys=True,
                                                        default=str).encode("ascii")
    chunks.insert(len(chunks) - 1, (b"tEXt", text))
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        png.write_chunks(handle, chunks)
    return path
