"""stable_diffusion: a diffusers Stable Diffusion directory (model_index.json, unet/, vae/,
text_encoder/, tokenizer/, scheduler/) loaded from safetensors, without the bundled safety
checker: the checker is a catalog model of its own (type safety_checker) that tasks apply when
asked, so it is budgeted, verified and shared like any other model."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from mlplatform.api import ArtifactError, ConfigError

from ..base import LoadRequest, TypeManager, module_bytes

# task.scheduler names -> diffusers scheduler classes (the usual A1111 / Nataili sampler names)
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "lms": "LMSDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "dpm_2": "KDPM2DiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
    "ddpm": "DDPMScheduler",
}
DEFAULT_SCHEDULER = "default"  # the one saved with the model


@dataclass
class DiffusionModel:
    """A loaded text-to-image pipeline; img2img / inpainting share its modules (no copies)."""

    pipeline: Any  # StableDiffusionPipeline
    device: Any
    dtype: Any
    variants: dict[str, Any] = field(default_factory=dict)
    default_scheduler: Any = None

    def pipe(self, mode: str, scheduler: str = DEFAULT_SCHEDULER) -> Any:
        """The pipeline for `mode` (txt2img, img2img, inpaint) with `scheduler` set."""
        from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

        if mode not in self.variants:
            cls = {"img2img": StableDiffusionImg2ImgPipeline,
                   "inpaint": StableDiffusionInpaintPipeline}.get(mode)
            self.variants[mode] = self.pipeline if cls is None else cls.from_pipe(self.pipeline)
        pipe = self.variants[mode]
        pipe.scheduler = make_scheduler(scheduler, self.default_scheduler)
        return pipe


def make_scheduler(name: str, default: Any) -> Any:
    """A fresh scheduler of kind `name` built from the model's own scheduler config."""
    import diffusers

    if name == DEFAULT_SCHEDULER:
        return type(default).from_config(default.config)
    if name not in SCHEDULERS:
        close = difflib.get_close_matches(name, [DEFAULT_SCHEDULER, *SCHEDULERS], n=1)
        raise ConfigError(
            f"unknown scheduler {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
            f"pass task.scheduler= one of: {DEFAULT_SCHEDULER}, {', '.join(SCHEDULERS)}",
        )
    return getattr(diffusers, SCHEDULERS[name]).from_config(default.config)


class StableDiffusionManager(TypeManager):
    """diffusers StableDiffusionPipeline from a save_pretrained directory (safetensors)."""

    types = ("stable_diffusion",)
    description = "Stable Diffusion txt2img / img2img / inpainting (diffusers)"

    def size_bytes(self, model: Any) -> int:
        return module_bytes(model.pipeline)

    def load_model(self, request: LoadRequest) -> Any:
        from diffusers import StableDiffusionPipeline

        if "model_index.json" not in request.files:
            raise ArtifactError(
                f"model {request.entry.name!r} lists no model_index.json",
                "a stable_diffusion entry is a diffusers directory: list model_index.json, "
                "unet/, vae/, text_encoder/, tokenizer/ and scheduler/ files",
            )
        if not request.allow_pickle and not any(p.endswith(".safetensors") for p in request.files):
            raise ArtifactError(
                f"model {request.entry.name!r} has no .safetensors weights",
                f"list the .safetensors files (pickled .bin weights need "
                f"manager.allow_pickle=[{request.entry.name}])",
            )
        try:
            pipeline = StableDiffusionPipeline.from_pretrained(
                request.root, dtype=request.dtype, local_files_only=True,
                use_safetensors=not request.allow_pickle or None,
                safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            )
        except (OSError, ValueError, TypeError) as exc:
            raise ArtifactError(
                f"model {request.entry.name!r}: {request.root} is not a loadable Stable "
                f"Diffusion directory: {exc}", "check the entry's files (diffusers layout)",
            ) from exc
        pipeline.to(request.device)
        pipeline.set_progress_bar_config(leave=False)
        return DiffusionModel(pipeline=pipeline, device=request.device, dtype=request.dtype,
                              default_scheduler=pipeline.scheduler)
