"""blip: transformers BLIP captioning models (BlipForConditionalGeneration + BlipProcessor from a
save_pretrained directory), loaded from safetensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlplatform.api import ArtifactError

from ..base import LoadRequest, TypeManager


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

        if not any(p.endswith(".safetensors") for p in request.files) and not request.allow_pickle:
            raise ArtifactError(
                f"model {request.entry.name!r} has no .safetensors weights",
                "list model.safetensors in the catalog entry (pickled .bin weights need "
                f"manager.allow_pickle=[{request.entry.name}])",
            )
        try:
            model = BlipForConditionalGeneration.from_pretrained(
                request.root, dtype=request.dtype, local_files_only=True,
                use_safetensors=not request.allow_pickle or None,
            )
            processor = BlipProcessor.from_pretrained(request.root, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ArtifactError(
                f"model {request.entry.name!r}: {request.root} is not a loadable BLIP "
                f"directory: {exc}", "check the entry's files (save_pretrained layout)",
            ) from exc
        model.to(request.device).eval()
        return BlipModel(model=model, processor=processor, device=request.device,
                         dtype=request.dtype)
