"""task=upscale: an image through an esrgan model, in overlapping tiles."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError, sha256_file

from ..images import load_image, save_png
from ..schemas import UpscaleTaskConfig
from . import Task, TaskContext

log = logging.getLogger(__name__)
MIN_TILE = 32


def upscale_tiled(run: Callable[[Any], Any], image: Any, scale: int, tile: int, overlap: int) -> Any:
    """`run` over `image` ([N, C, H, W]) in tiles of `tile` px, each with `overlap` px of context
    on every side that is cropped off the result; tile <= 0 (or an image that fits) runs once."""
    import torch

    _n, _c, height, width = image.shape
    if tile <= 0 or (height <= tile and width <= tile):
        return run(image)
    out = None
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            ctop, cleft = max(top - overlap, 0), max(left - overlap, 0)
            cbottom, cright = min(bottom + overlap, height), min(right + overlap, width)
            result = run(image[:, :, ctop:cbottom, cleft:cright])
            if out is None:
                out = torch.zeros(image.shape[0], result.shape[1], height * scale, width * scale,
                                  dtype=result.dtype, device=result.device)
            y, x = (top - ctop) * scale, (left - cleft) * scale
            h, w = (bottom - top) * scale, (right - left) * scale
            out[:, :, top * scale:bottom * scale, left * scale:right * scale] = \
                result[:, :, y:y + h, x:x + w]
    return out


def upscale_with_fallback(run, image, scale: int, tile: int, overlap: int) -> tuple[Any, int]:
    """upscale_tiled, halving the tile (down to 32 px) whenever the device runs out of memory.
    Returns (output, tile used)."""
    import torch

    while True:
        try:
            return upscale_tiled(run, image, scale, tile, overlap), tile
        except torch.OutOfMemoryError:
            if image.device.type == "cuda":
                torch.cuda.empty_cache()
            smaller = (max(image.shape[-2:]) if tile <= 0 else tile) // 2
            if smaller < MIN_TILE:
                raise
            log.warning("out of memory with tile %s; retrying with tile %d", tile or "none", smaller)
            tile = smaller


def to_tensor(image: Any) -> Any:
    import numpy as np
    import torch

    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_image(tensor: Any, mode: str) -> Any:
    import numpy as np
    from PIL import Image

    array = tensor.squeeze(0).permute(1, 2, 0).float().clamp(0, 1).cpu().numpy()
    return Image.fromarray((array * 255.0).round().astype(np.uint8), mode)


class UpscaleTask(Task):
    name = "upscale"
    description = "upscale an image with an esrgan model (tiles, alpha kept)"
    schema = UpscaleTaskConfig
    model_types = ("esrgan",)

    def run(self, ctx: TaskContext, options: UpscaleTaskConfig) -> dict[str, Any]:
        import torch

        if options.tile < 0 or (0 < options.tile < MIN_TILE):
            raise ConfigError(f"task.tile is {options.tile}; use 0 (no tiling) or >= {MIN_TILE}",
                              "pass task.tile=512")
        if options.overlap < 0:
            raise ConfigError(f"task.overlap is {options.overlap}; it must be >= 0",
                              "pass task.overlap=32")
        source = load_image(options.input)
        if source.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            raise ConfigError(f"input image {options.input} is {source.mode} (16/32-bit); only "
                              "8-bit images are supported so far", "convert it to 8-bit first")
        gray = source.mode in ("1", "L", "LA")
        alpha = None
        if source.mode in ("RGBA", "LA", "PA") or (source.mode == "P" and "transparency" in source.info):
            source = source.convert("RGBA")
            alpha = source.getchannel("A")
        rgb = source.convert("RGB")
        with ctx.manager.use(ctx.model, device=ctx.device, dtype=ctx.dtype) as model:
            scale = model.scale
            x = to_tensor(rgb).to(model.device, model.dtype)
            with torch.inference_mode():
                out, tile = upscale_with_fallback(model, x, scale, options.tile, options.overlap)
                image = to_image(out, "RGB")
                if alpha is not None:
                    a = to_tensor(alpha.convert("RGB"))[:, :1]
                    a = torch.nn.functional.interpolate(a, scale_factor=scale, mode="bicubic",
                                                        align_corners=False)
                    image.putalpha(to_image(a.repeat(1, 3, 1, 1), "RGB").getchannel(0))
        if gray:
            image = image.convert("LA" if alpha is not None else "L")
        name = options.output or f"{Path(options.input).stem}_x{scale}.png"
        if Path(name).name != name:
            raise ConfigError(f"task.output {name!r} must be a file name, not a path",
                              "the output goes to the run dir; pass task.output=NAME.png")
        parameters = {
            "task": "upscale", "model": ctx.model, "scale": scale, "tile": tile,
            "overlap": options.overlap, "input": str(options.input),
            "input_sha256": sha256_file(options.input), "device": str(model.device),
            "dtype": str(model.dtype).removeprefix("torch."),
            "model_sha256": hashlib.sha256(
                "".join(f.sha256 or "" for f in ctx.manager.entry(ctx.model).files).encode()
            ).hexdigest()[:16],
        }
        path = save_png(image, ctx.output_dir / name, parameters)
        print(f"upscaled {options.input} ({source.width}x{source.height}) x{scale} with "
              f"{ctx.model} -> {path} ({image.width}x{image.height}, tile {tile or 'none'})")
        return {"output": str(path), "width": image.width, "height": image.height,
                "scale": scale, "tile": tile, "parameters": parameters}
