"""task=caption: a caption for an image from a BLIP model."""

from __future__ import annotations

from typing import Any

from mlplatform.api import ConfigError, atomic_write_json

from ..batch import BatchRun, process_device, read_image_list, run_settings, single_or_batch
from ..images import load_image
from ..schemas import CaptionTaskConfig
from . import Task, TaskContext


def caption(blip: Any, image: Any, *, prompt: str = "", max_new_tokens: int = 30,
            num_beams: int = 1) -> str:
    """Greedy (or beam) caption of a PIL image; `prompt` starts the caption (conditional).
    BLIP models, or open_clip CoCa models (greedy only)."""
    import torch

    if hasattr(blip, "caption"):  # open_clip (CoCa)
        if num_beams != 1:
            raise ConfigError("open_clip CoCa captioning is greedy only",
                              "pass task.num_beams=1")
        return blip.caption(image, prompt=prompt, max_new_tokens=max_new_tokens)

    inputs = blip.processor(images=image.convert("RGB"), text=prompt or None, return_tensors="pt")
    inputs = {k: (v.to(blip.device, blip.dtype) if v.is_floating_point() else v.to(blip.device))
              for k, v in inputs.items()}
    with torch.inference_mode():
        tokens = blip.model.generate(**inputs, max_new_tokens=max_new_tokens,
                                     num_beams=num_beams, do_sample=False)
    return blip.processor.decode(tokens[0], skip_special_tokens=True).strip()


class CaptionTask(Task):
    name = "caption"
    description = "caption an image with a BLIP or an open_clip CoCa model"
    schema = CaptionTaskConfig
    model_types = ("blip", "open_clip")

    def run(self, ctx: TaskContext, options: CaptionTaskConfig) -> dict[str, Any]:
        if options.max_new_tokens < 1 or options.num_beams < 1:
            raise ConfigError(
                f"task.max_new_tokens ({options.max_new_tokens}) and task.num_beams "
                f"({options.num_beams}) must be >= 1", "pass task.max_new_tokens=30 task.num_beams=1")
        single_or_batch("caption", options.input, options.batch_file)
        if options.batch_file:
            return self.run_batch(ctx, options)
        image = load_image(options.input)
        with ctx.manager.use(ctx.model, device=ctx.device, dtype=ctx.dtype) as blip:
            text = caption(blip, image, prompt=options.prompt,
                           max_new_tokens=options.max_new_tokens, num_beams=options.num_beams)
        result = {"caption": text, "model": ctx.model, "input": str(options.input),
                  "prompt": options.prompt}
        path = atomic_write_json(ctx.output_dir / "caption.json", result)
        print(text)
        print(f"saved {path}")
        return {**result, "path": str(path)}

    def run_batch(self, ctx: TaskContext, options: CaptionTaskConfig) -> dict[str, Any]:
        """captions.json: [{item, input, caption}] for every image of the batch file, this
        process's share captioned with the model loaded once."""
        items = read_image_list(options.batch_file)
        batch = BatchRun(items, ctx.output_dir, "captions.json", run_settings(ctx, options))
        records = []
        with ctx.manager.use(ctx.model, device=process_device(ctx.device), dtype=ctx.dtype) as blip:
            for index, source in batch.share:
                text = caption(blip, load_image(source), prompt=options.prompt,
                               max_new_tokens=options.max_new_tokens, num_beams=options.num_beams)
                records.append({"item": index, "input": source, "caption": text,
                                "model": ctx.model, "prompt": options.prompt})
                batch.done(index, [records[-1]])
                print(f"[{batch.rank}/{batch.world}] {source}: {text}")
        if batch.finish() is not None:
            print(f"saved {batch.path}")
        return {"captions": records, "items": len(items), "resumed": batch.resumed,
                "processes": batch.world, "process": batch.rank}
