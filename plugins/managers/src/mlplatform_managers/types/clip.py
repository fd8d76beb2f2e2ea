"""clip: transformers CLIP models (a save_pretrained directory: config, weights, tokenizer and
image processor), loaded from safetensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlplatform.api import ArtifactError

from ..base import LoadRequest, TypeManager


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

        if not any(p.endswith(".safetensors") for p in request.files) and not request.allow_pickle:
            raise ArtifactError(
                f"model {request.entry.name!r} has no .safetensors weights",
                "list model.safetensors in the catalog entry (pickled .bin weights need "
                f"manager.allow_pickle=[{request.entry.name}])",
            )
        try:
            model = CLIPModel.from_pretrained(
                request.root, dtype=request.dtype, local_files_only=True,
                use_safetensors=not request.allow_pickle or None,
            )
            processor = CLIPProcessor.from_pretrained(request.root, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ArtifactError(
                f"model {request.entry.name!r}: {request.root} is not a loadable CLIP "
                f"directory: {exc}", "check the entry's files (save_pretrained layout)",
            ) from exc
        model.to(request.device).eval()
        return ClipModel(model=model, processor=processor, device=request.device,
                         dtype=request.dtype)
