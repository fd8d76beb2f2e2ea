"""clip: transformers CLIP models (a save_pretrained directory: config, weights, tokenizer and
image processor), loaded from safetensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..base import LoadRequest, TypeManager, load_pretrained


@dataclass
class ClipModel:
    """A CLIP model with its processor, and normalised embeddings cached by content hash."""

    model: Any
    processor: Any
    device: Any
    dtype: Any
    image_cache: dict[str, Any] = field(default_factory=dict)
    text_cache: dict[str, Any] = field(default_factory=dict)


class ClipManager(TypeManager):
    """transformers CLIPModel + CLIPProcessor from a save_pretrained directory."""

    types = ("clip",)
    description = "CLIP image/text embeddings and interrogation (transformers)"

    def load_model(self, request: LoadRequest) -> Any:
        from transformers import CLIPModel, CLIPProcessor

        model, processor = load_pretrained(request, CLIPModel, CLIPProcessor, "CLIP")
        return ClipModel(model=model, processor=processor, device=request.device,
                         dtype=request.dtype)
