"""task=safety_check: the Stable Diffusion safety checker on an image; a flagged image is
replaced by a black one and marked censored (in its PNG metadata and the JSON report)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError, atomic_write_json, sha256_file

from ..batch import BatchRun, process_device, read_image_list, run_settings, single_or_batch
from ..images import load_image, save_png
from ..schemas import SafetyCheckTaskConfig
from . import Task, TaskContext


def check_images(checker: Any, images: list[Any]) -> list[bool]:
    """True for each PIL image the checker flags as NSFW."""
    import numpy as np
    import torch

    rgb = [image.convert("RGB") for image in images]
    pixels = checker.processor(images=rgb, return_tensors="pt")["pixel_values"]
    arrays = [np.asarray(image, dtype=np.float32) / 255.0 for image in rgb]
    with torch.inference_mode():
        _, flagged = checker.model(clip_input=pixels.to(checker.device, checker.dtype),
                                   images=[a.copy() for a in arrays])
    return [bool(f) for f in flagged]


def censor(image: Any) -> Any:
    from PIL import Image

    return Image.new("RGB", image.size, (0, 0, 0))


class SafetyCheckTask(Task):
    name = "safety_check"
    description = "flag NSFW images with the Stable Diffusion safety checker"
    schema = SafetyCheckTaskConfig
    model_types = ("safety_checker",)

    def run(self, ctx: TaskContext, options: SafetyCheckTaskConfig) -> dict[str, Any]:
        single_or_batch("safety_check", options.input, options.batch_file, (options.output,))
        if options.batch_file:
            return self.run_batch(ctx, options)
        name = options.output or f"{Path(options.input).stem}_checked.png"
        if Path(name).name != name:
            raise ConfigError(f"task.output {name!r} must be a file name, not a path",
                              "the output goes to the run dir; pass task.output=NAME.png")
        with ctx.manager.use(ctx.model, device=ctx.device, dtype=ctx.dtype) as checker:
            report = check_one(ctx, checker, options.input, name)
        atomic_write_json(ctx.output_dir / "safety.json", report)
        return report

    def run_batch(self, ctx: TaskContext, options: SafetyCheckTaskConfig) -> dict[str, Any]:
        """safety.json: a list of every image's report (item order); outputs
        <stem>_checked.png, this process's share checked with the model loaded once."""
        items = read_image_list(options.batch_file)
        batch = BatchRun(items, ctx.output_dir, "safety.json", run_settings(ctx, options))
        device = process_device(ctx.device)
        records = []
        with ctx.manager.use(ctx.model, device=device, dtype=ctx.dtype) as checker:
            for index, source in batch.share:
                records.append({**check_one(ctx, checker, source,
                                            f"{Path(source).stem}_checked.png"), "item": index})
                batch.done(index, [records[-1]])
        batch.finish()
        return {"images": records, "items": len(items), "resumed": batch.resumed,
                "processes": batch.world, "process": batch.rank}


def check_one(ctx: TaskContext, checker: Any, source: str, name: str) -> dict[str, Any]:
    """One image checked and saved as `name` in the run dir (black when flagged)."""
    image = load_image(source)
    flagged = check_images(checker, [image])[0]
    parameters = {"task": "safety_check", "model": ctx.model, "censored": flagged,
                  "input": str(source), "input_sha256": sha256_file(source)}
    path = save_png(censor(image) if flagged else image, ctx.output_dir / name, parameters)
    print(f"{source}: {'FLAGGED, replaced by a black image' if flagged else 'clean'} -> {path}")
    return {**parameters, "output": str(path)}
