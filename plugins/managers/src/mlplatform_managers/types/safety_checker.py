"""safety_checker: the Stable Diffusion safety checker (diffusers StableDiffusionSafetyChecker, a
CLIP vision tower compared with NSFW concept embeddings) and its CLIP image processor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..base import LoadRequest, TypeManager, load_pretrained


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

        model, processor = load_pretrained(request, StableDiffusionSafetyChecker, CLIPImageProcessor, "safety checker")
        return SafetyChecker(model=model, processor=processor, device=request.device,
                             dtype=request.dtype)
