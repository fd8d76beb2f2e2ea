"""task=upscale: an image through an esrgan model, in overlapping tiles."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError, sha256_file

from ..batch import BatchRun, process_device, read_image_list, run_settings, single_or_batch
from ..images import load_array, save_array
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


class UpscaleTask(Task):
    name = "upscale"
    description = "upscale an image with an esrgan model (tiles, alpha kept)"
    schema = UpscaleTaskConfig
    model_types = ("esrgan",)

    def run(self, ctx: TaskContext, options: UpscaleTaskConfig) -> dict[str, Any]:

        if options.tile < 0 or (0 < options.tile < MIN_TILE):
            raise ConfigError(f"task.tile is {options.tile}; use 0 (no tiling) or >= {MIN_TILE}",
                              "pass task.tile=512")
        if options.overlap < 0:
            raise ConfigError(f"task.overlap is {options.overlap}; it must be >= 0",
                              "pass task.overlap=32")
        if options.bit_depth not in (None, 8, 16):
            raise ConfigError(f"task.bit_depth is {options.bit_depth}; use 8, 16 or null",
                              "null keeps the input's bit depth")
        single_or_batch("upscale", options.input, options.batch_file, (options.output,))
        if not options.batch_file:
            return self.upscale_one(ctx, options, options.input, options.output)
        items = read_image_list(options.batch_file)
        batch = BatchRun(items, ctx.output_dir, "upscaled.json", run_settings(ctx, options))
        ctx = dataclasses.replace(ctx, device=process_device(ctx.device))
        done = []
        for index, source in batch.share:
            done.append({**self.upscale_one(ctx, options, source, ""), "item": index})
            batch.done(index, [done[-1]])
        # upscaled.json: every process's records, written by process 0 once all have finished
        batch.finish()
        return {"images": done, "items": len(items), "resumed": batch.resumed,
                "processes": batch.world, "process": batch.rank}

    def upscale_one(self, ctx: TaskContext, options: UpscaleTaskConfig, source: str,
                    output: str) -> dict[str, Any]:
        """One image through the model (loaded once, reused for every image of a batch)."""
        import torch

        pixels, depth, grey, has_alpha = load_array(source)
        colour = pixels[..., :-1] if has_alpha else pixels
        x = torch.from_numpy(colour).permute(2, 0, 1).unsqueeze(0).contiguous()
        if grey:
            x = x.repeat(1, 3, 1, 1)
        with ctx.manager.use(ctx.model, device=ctx.device, dtype=ctx.dtype) as model:
            scale = model.scale
            with torch.inference_mode():
                out, tile = upscale_with_fallback(model, x.to(model.device, model.dtype), scale,
                                                  options.tile, options.overlap)
                out = out.float().clamp(0, 1).cpu()
        if grey:  # ITU-R 601-2 luma, as Pillow's convert("L")
            out = (out * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        if has_alpha:  # alpha is not image content: bicubic, not the model
            a = torch.from_numpy(pixels[..., -1:]).permute(2, 0, 1).unsqueeze(0)
            a = torch.nn.functional.interpolate(a, scale_factor=scale, mode="bicubic",
                                                align_corners=False).clamp(0, 1)
            out = torch.cat([out, a], dim=1)
        result = out[0].permute(1, 2, 0).numpy()
        out_depth = options.bit_depth or depth
        source_height, source_width = pixels.shape[:2]
        name = output or f"{Path(source).stem}_x{scale}.png"
        if Path(name).name != name:
            raise ConfigError(f"task.output {name!r} must be a file name, not a path",
                              "the output goes to the run dir; pass task.output=NAME.png")
        parameters = {
            "task": "upscale", "model": ctx.model, "scale": scale, "tile": tile,
            "overlap": options.overlap, "input": str(source), "input_bit_depth": depth,
            "bit_depth": out_depth,
            "input_sha256": sha256_file(source), "device": str(model.device),
            "dtype": str(model.dtype).removeprefix("torch."),
            "model_sha256": hashlib.sha256(
                "".join(f.sha256 or "" for f in ctx.manager.entry(ctx.model).files).encode()
            ).hexdigest()[:16],
        }
        path = save_array(result, ctx.output_dir / name, parameters, out_depth)
        height, width = result.shape[:2]
        print(f"upscaled {source} ({source_width}x{source_height}, {depth}-bit) x{scale} "
              f"with {ctx.model} -> {path} ({width}x{height}, {out_depth}-bit, tile "
              f"{tile or 'none'})")
        return {"output": str(path), "width": width, "height": height,
                "scale": scale, "tile": tile, "parameters": parameters}
