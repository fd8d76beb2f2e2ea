"""safety_checker: the Stable Diffusion safety checker (diffusers StableDiffusionSafetyChecker, a
CLIP vision tower compared with NSFW concept embeddings) and its CLIP image processor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlplatform.api import ArtifactError

from ..base import LoadRequest, TypeManager


@dataclass
class SafetyChecker:
    model: Any
    processor: Any
    device: Any
    dtype: Any


class SafetyCheckerManager(TypeManager):
    """diffusers StableDiffusionSafetyChecker + CLIPImageProcessor from a save_pretrained dir."""

    types = ("safety_checker",)
    description = "Stable Diffusion safety checker (diffusers)"

    def load_model(self, request: LoadRequest) -> Any:
        from diffusers.pipelines.stable_diffusion.safety_checker import (
            StableDiffusionSafetyChecker,
        )
        from transformers import CLIPImageProcessor

        if not any(p.endswith(".safetensors") for p in request.files) and not request.allow_pickle:
            raise ArtifactError(
                f"model {request.entry.name!r} has no .safetensors weights",
                "list model.safetensors in the catalog entry (pickled .bin weights need "
                f"manager.allow_pickle=[{request.entry.name}])",
            )
        try:
            model = StableDiffusionSafetyChecker.from_pretrained(
                request.root, dtype=request.dtype, local_files_only=True,
                use_safetensors=not request.allow_pickle or None,
            )
            processor = CLIPImageProcessor.from_pretrained(request.root, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ArtifactError(
                f"model {request.entry.name!r}: {request.root} is not a loadable safety checker "
                f"directory: {exc}", "check the entry's files (save_pretrained layout)",
            ) from exc
        model.to(request.device).eval()
        return SafetyChecker(model=model, processor=processor, device=request.device,
                             dtype=request.dtype)
