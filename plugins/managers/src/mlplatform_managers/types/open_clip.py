"""open_clip: OpenCLIP models in open_clip's own checkpoint layout (open_clip_config.json with
model_cfg / preprocess_cfg, and open_clip_model.safetensors), as the hub's laion/* repos publish
them; loaded by open_clip itself (`local-dir:` schema) with weights_only loading, and exposing the
same embedding interface as the transformers CLIP manager so `task=interrogate` takes both."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlplatform.api import ArtifactError, ConfigError

from ..base import LoadRequest, TypeManager, module_bytes


@dataclass
class OpenClipModel:
    """An OpenCLIP model with its preprocessing and tokenizer; embeddings cached by content hash
    (the caches interrogate fills)."""

    model: Any
    preprocess: Any
    tokenizer: Any
    device: Any
    dtype: Any
    image_cache: dict[str, Any] = field(default_factory=dict)
    text_cache: dict[str, Any] = field(default_factory=dict)

    def encode_images(self, images: list[Any]) -> Any:
        import torch

        pixels = torch.stack([self.preprocess(image.convert("RGB")) for image in images])
        return self.model.encode_image(pixels.to(self.device, self.dtype)).float()

    def encode_texts(self, texts: list[str]) -> Any:
        return self.model.encode_text(self.tokenizer(texts).to(self.device)).float()

    def caption(self, image: Any, *, prompt: str = "", max_new_tokens: int = 30) -> str:
        """Greedy CoCa captioning through the model's own forward (image encoded once, one
        decoder pass per token). open_clip's CoCa.generate needs transformers' BeamSearchScorer,
        which transformers 5 removed, so it is not used."""
        import torch

        if not hasattr(self.model, "text_decoder"):
            raise ConfigError(f"{type(self.model).__name__} models cannot caption; only CoCa "
                              "models (an open_clip config with multimodal_cfg) can",
                              "use a CoCa model or a blip model for task=caption")
        sot, eot = self.tokenizer.sot_token_id, self.tokenizer.eot_token_id
        prefix = self.tokenizer.encode(prompt) if prompt else []
        tokens = torch.tensor([[sot, *prefix]], device=self.device)
        limit = self.model.text.context_length if hasattr(self.model, "text") else 76
        pixels = self.preprocess(image.convert("RGB")).unsqueeze(0).to(self.device, self.dtype)
        with torch.inference_mode():
            encoded = self.model(pixels)
            latent, embs = encoded["image_features"], encoded["image_embs"]
            for _ in range(max_new_tokens):
                if tokens.shape[1] >= limit:
                    break
                logits = self.model(pixels, tokens, image_latent=latent, image_embs=embs,
                                    output_labels=False)["logits"][:, -1]
                logits[:, sot] = float("-inf")  # never restart the text
                following = logits.argmax(dim=-1, keepdim=True)
                if int(following) == eot:
                    break
                tokens = torch.cat([tokens, following], dim=1)
        return self.tokenizer.decode(tokens[0, 1:].tolist()).strip()


class OpenClipManager(TypeManager):
    types = ("open_clip",)
    description = "OpenCLIP image/text embeddings and interrogation (open_clip_torch)"

    def size_bytes(self, model: Any) -> int:
        return module_bytes(model.model)

    def load_model(self, request: LoadRequest) -> Any:
        try:
            import open_clip
        except ImportError as exc:
            raise ConfigError("open_clip models need open_clip_torch, which is not installed",
                              "pip install 'mlplatform-managers[open_clip]'") from exc
        if "open_clip_config.json" not in request.files:
            raise ArtifactError(
                f"model {request.entry.name!r} lists no open_clip_config.json",
                "an open_clip entry lists open_clip_config.json and open_clip_model.safetensors",
            )
        if not request.allow_pickle and not any(p.endswith(".safetensors") for p in request.files):
            raise ArtifactError(
                f"model {request.entry.name!r} has no .safetensors weights",
                f"list open_clip_model.safetensors (pickled .bin weights need "
                f"manager.allow_pickle=[{request.entry.name}])",
            )
        name = f"local-dir:{request.root}"
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, device=request.device, weights_only=not request.allow_pickle)
            tokenizer = open_clip.get_tokenizer(name)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ArtifactError(
                f"model {request.entry.name!r}: {request.root} is not a loadable open_clip "
                f"directory: {exc}", "check the entry's files (open_clip_config.json + weights)",
            ) from exc
        model.to(request.device, request.dtype).eval()
        return OpenClipModel(model=model, preprocess=preprocess, tokenizer=tokenizer,
                             device=request.device, dtype=request.dtype)
