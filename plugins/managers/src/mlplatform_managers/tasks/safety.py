"""task=safety_check: the Stable Diffusion safety checker on an image; a flagged image is
replaced by a black one and marked censored (in its PNG metadata and the JSON report)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError, atomic_write_json, sha256_file

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
        image = load_image(options.input)
        with ctx.manager.use(ctx.model, device=ctx.device, dtype=ctx.dtype) as checker:
            flagged = check_images(checker, [image])[0]
        name = options.output or f"{Path(options.input).stem}_checked.png"
        if Path(name).name != name:
            raise ConfigError(f"task.output {name!r} must be a file name, not a path",
                              "the output goes to the run dir; pass task.output=NAME.png")
        parameters = {"task": "safety_check", "model": ctx.model, "censored": flagged,
                      "input": str(options.input), "input_sha256": sha256_file(options.input)}
        output = censor(image) if flagged else image
        path = save_png(output, ctx.output_dir / name, parameters)
        report = {**parameters, "output": str(path)}
        atomic_write_json(ctx.output_dir / "safety.json", report)
        print(f"{options.input}: {'FLAGGED, replaced by a black image' if flagged else 'clean'} "
              f"-> {path}")
        return report
