"""task=txt2img / img2img / inpaint: Stable Diffusion through diffusers, one prompt or a batch
file (split across processes under `accelerate launch`), every image saved as a PNG carrying its
generation parameters, and the safety checker applied when `task.safety_checker` names one."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError, sha256_file

from ..batch import BatchRun, process_device, read_batch_file, run_settings
from ..images import load_image, save_png
from ..schemas import Img2ImgTaskConfig, InpaintTaskConfig, Txt2ImgTaskConfig
from . import Task, TaskContext
from .safety import censor, check_images

log = logging.getLogger(__name__)
# the images each mode needs per work item (from the options, or a .jsonl item's own keys)
IMAGE_KEYS = {"txt2img": (), "img2img": ("input",), "inpaint": ("input", "mask")}
DEFAULT_SIZE = 512
SIZE_MULTIPLE = 8


def check_options(options: Txt2ImgTaskConfig) -> None:
    problems = []
    if options.steps < 1:
        problems.append(f"task.steps is {options.steps}; it must be >= 1")
    if options.images_per_prompt < 1:
        problems.append(f"task.images_per_prompt is {options.images_per_prompt}; it must be >= 1")
    if options.guidance < 0:
        problems.append(f"task.guidance is {options.guidance}; it must be >= 0")
    for side in ("width", "height"):
        value = getattr(options, side)
        if value is not None and (value < SIZE_MULTIPLE or value % SIZE_MULTIPLE):
            problems.append(f"task.{side} is {value}; it must be a positive multiple of 8")
    strength = getattr(options, "strength", None)
    if strength is not None and not 0.0 < strength <= 1.0:
        problems.append(f"task.strength is {strength}; it must be in (0, 1]")
    prefix = options.output_prefix
    if prefix and Path(prefix).name != prefix:
        problems.append(f"task.output_prefix {prefix!r} must be a file name prefix, not a path")
    if problems:
        raise ConfigError("; ".join(problems),
                          "e.g. task.steps=30 task.width=512 task.height=512 task.strength=0.75")


def work_items(options: Txt2ImgTaskConfig, mode: str) -> list[dict[str, Any]]:
    if options.batch_file:
        items = read_batch_file(options.batch_file,
                                ("prompt", "negative_prompt", "seed", *IMAGE_KEYS[mode]))
    else:
        if not options.prompt:
            raise ConfigError(f"task={mode} needs a prompt",
                              "pass task.prompt='a photo of a cat' or task.batch_file=prompts.txt")
        items = [{"prompt": options.prompt}]
    for number, item in enumerate(items, 1):
        if not isinstance(item.get("prompt", ""), str) or not item.get("prompt"):
            raise ConfigError(f"item {number} of the batch has no prompt (a non-empty string)",
                              'give every line a prompt, e.g. {"prompt": "a cat"}')
        seed = item.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise ConfigError(f"item {number} of the batch: seed {seed!r} is not an integer >= 0",
                              'write e.g. {"prompt": "a cat", "seed": 3}')
        for key in IMAGE_KEYS[mode]:
            item.setdefault(key, getattr(options, key))
            if not item[key]:
                raise ConfigError(f"task={mode}: item {number} has no {key} image",
                                  f"pass task.{key}=PATH (or \"{key}\" in each .jsonl line)")
    return items


def _size(options: Txt2ImgTaskConfig, image: Any) -> tuple[int, int]:
    """(width, height): the options', else the input's rounded down to a multiple of 8."""
    if image is None:
        return options.width or DEFAULT_SIZE, options.height or DEFAULT_SIZE
    width = options.width or max(image.width // SIZE_MULTIPLE * SIZE_MULTIPLE, SIZE_MULTIPLE)
    height = options.height or max(image.height // SIZE_MULTIPLE * SIZE_MULTIPLE, SIZE_MULTIPLE)
    return width, height


def generate(model: Any, mode: str, item: dict[str, Any], options: Txt2ImgTaskConfig,
             seeds: list[int]) -> tuple[list[Any], dict[str, Any]]:
    """Images for one work item (one per seed) and the parameters that reproduce them."""
    import torch
    from PIL import Image

    pipe = model.pipe(mode, options.scheduler)
    init = load_image(item["input"]).convert("RGB") if mode != "txt2img" else None
    width, height = _size(options, init)
    kwargs: dict[str, Any] = dict(
        prompt=item["prompt"], negative_prompt=item.get("negative_prompt", options.negative_prompt) or None,
        num_inference_steps=options.steps, guidance_scale=options.guidance,
        num_images_per_prompt=len(seeds), output_type="pil",
        generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
    )
    parameters: dict[str, Any] = {
        "task": mode, "prompt": item["prompt"], "negative_prompt": kwargs["negative_prompt"] or "",
        "steps": options.steps, "guidance": options.guidance, "scheduler": options.scheduler,
        "scheduler_class": type(pipe.scheduler).__name__, "width": width, "height": height,
    }
    if init is None:
        kwargs.update(width=width, height=height)
    else:
        kwargs.update(image=init.resize((width, height), Image.Resampling.LANCZOS),
                      strength=options.strength)  # type: ignore[attr-defined]
        parameters.update(input=str(item["input"]), input_sha256=sha256_file(item["input"]),
                          strength=options.strength)  # type: ignore[attr-defined]
    if mode == "inpaint":
        mask = load_image(item["mask"]).convert("L").resize((width, height), Image.Resampling.NEAREST)
        kwargs.update(mask_image=mask, width=width, height=height)
        parameters.update(mask=str(item["mask"]), mask_sha256=sha256_file(item["mask"]))
    with torch.inference_mode():
        images = pipe(**kwargs).images
    if mode == "inpaint":  # unmasked pixels are the input's own, not a VAE round trip of them
        kept = kwargs["image"]
        images = [Image.composite(image.convert("RGB"), kept, mask) for image in images]
    return images, parameters


class DiffusionTask(Task):
    """The shared run loop of txt2img, img2img and inpaint."""

    model_types = ("stable_diffusion",)

    def run(self, ctx: TaskContext, options: Txt2ImgTaskConfig) -> dict[str, Any]:
        check_options(options)
        mode = self.name
        items = work_items(options, mode)
        if options.safety_checker:
            checker_entry = ctx.manager.entry(options.safety_checker)
            if checker_entry.type != "safety_checker":
                raise ConfigError(
                    f"task.safety_checker={options.safety_checker} is a {checker_entry.type} model",
                    "name a safety_checker model (job=infer task=list task.type=safety_checker)",
                )
        for name in options.compiled:
            if ctx.manager.entry(str(name)).type != "compiled":
                raise ConfigError(f"task.compiled names {name!r}, which is not a compiled model",
                                  "name compiled models (job=infer task=list task.type=compiled)")
        batch = BatchRun(items, ctx.output_dir, "generations.json", run_settings(ctx, options))
        rank, world = batch.rank, batch.world
        device = process_device(ctx.device)
        base_seed = ctx.seed if options.seed is None else options.seed
        per = options.images_per_prompt
        prefix = options.output_prefix or f"{mode}_"
        records = []
        compiled = [str(name) for name in options.compiled]
        with contextlib.ExitStack() as stack:
            model = stack.enter_context(ctx.manager.use(ctx.model, device=device, dtype=ctx.dtype))
            parts = [stack.enter_context(ctx.manager.use(name, device=device, dtype=ctx.dtype))
                     for name in compiled]
            if parts:
                from ..types.compiled import swapped

                stack.enter_context(swapped(model, ctx.model, parts))
            for index, item in batch.share:
                first = item["seed"] if item.get("seed") is not None else base_seed + index * per
                seeds = [first + b for b in range(per)]
                images, parameters = generate(model, mode, item, options, seeds)
                flags = [None] * len(images)
                done = []
                if options.safety_checker:
                    with ctx.manager.use(options.safety_checker, device=device,
                                         dtype=ctx.dtype) as checker:
                        flags = check_images(checker, images)
                for b, (image, seed, flagged) in enumerate(zip(images, seeds, flags, strict=True)):
                    meta = {**parameters, "model": ctx.model, "seed": seed, "item": index,
                            "image": b, "safety_checker": options.safety_checker,
                            "compiled": compiled,
                            "censored": flagged, "device": str(model.device),
                            "dtype": str(model.dtype).removeprefix("torch.")}
                    path = save_png(censor(image) if flagged else image,
                                    ctx.output_dir / f"{prefix}{index:05d}_{b}.png", meta)
                    done.append({**meta, "output": str(path)})
                    print(f"[{rank}/{world}] item {index} image {b} seed {seed}"
                          f"{' FLAGGED, replaced by a black image' if flagged else ''} -> {path}")
                batch.done(index, done)
                records += done
        # generations.json: every process's records, written by process 0 once all finished
        batch.finish(order=lambda r: (r["item"], r["image"]))
        report = {"images": records, "items": len(items), "resumed": batch.resumed,
                  "processes": world}
        return report if world == 1 else {**report, "process": rank}


class Txt2ImgTask(DiffusionTask):
    name = "txt2img"
    description = "Stable Diffusion: images from prompts"
    schema = Txt2ImgTaskConfig


class Img2ImgTask(DiffusionTask):
    name = "img2img"
    description = "Stable Diffusion: images from an image and prompts"
    schema = Img2ImgTaskConfig


class InpaintTask(DiffusionTask):
    name = "inpaint"
    description = "Stable Diffusion: repaint the masked part of an image"
    schema = InpaintTaskConfig
