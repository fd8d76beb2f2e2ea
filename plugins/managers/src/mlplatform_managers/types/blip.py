"""blip: transformers BLIP captioning models (BlipForConditionalGeneration + BlipProcessor from a
save_pretrained directory), loaded from safetensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..base import LoadRequest, TypeManager, load_pretrained


@dataclass
class BlipModel:
    model: Any
    processor: Any
    device: Any
    dtype: Any


class BlipManager(TypeManager):
    """transformers BlipForConditionalGeneration + BlipProcessor."""

    types = ("blip",)
    description = "BLIP image captioning (transformers)"

    def load_model(self, request: LoadRequest) -> Any:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        model, processor = load_pretrained(request, BlipForConditionalGeneration, BlipProcessor, "BLIP")
        return BlipModel(model=model, processor=processor, device=request.device,
                         dtype=request.dtype)
