"""open_clip models: a directory in open_clip's own format (open_clip_config.json with model_cfg
and preprocess_cfg, plus open_clip_model.safetensors), loaded with open_clip's `local-dir:`
scheme, behind the same interface as the transformers CLIP encoder.

Texts go through open_clip's tokenizer (fixed context length, no attention mask), images
through its preprocessing transform. LoRA (`add_lora`) goes on the towers' attention
(nn.MultiheadAttention, which peft wraps whole) and MLP layers, the projections staying
trainable; gradient checkpointing is open_clip's set_grad_checkpointing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlplatform.api import ConfigError, ModelSourceError, atomic_write_json

from .clip import ImageTextBase, load_pixels

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"


class TransformProcessor:
    """open_clip's torchvision preprocessing with the call shape of a transformers image
    processor: processor(images=[PIL...], return_tensors="pt")["pixel_values"]."""

    def __init__(self, transform: Any):
        self.transform = transform

    def __call__(self, images: list[Any], return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.stack([self.transform(image) for image in images])}


class OpenClipEncoder(ImageTextBase):
    """An open_clip CLIP model as an embedding model (texts and images in one space)."""

    pooling = "open_clip"
    projection = None

    def __init__(self, backbone: nn.Module, tokenizer: Any, transform: Any, config: dict[str, Any],
                 *, normalize: bool = True, source: str = ""):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.image_processor = TransformProcessor(transform)
        self.config = config
        self.normalize = normalize
        self.max_seq_length = int(config["model_cfg"]["text_cfg"].get("context_length", 77))
        self.source = source

    family = "open_clip"

    @property
    def base(self) -> nn.Module:
        """open_clip's CLIP itself (LoRA layers, when present, are inside it)."""
        return self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") else self.backbone

    @property
    def embedding_dim(self) -> int:
        return int(self.config["model_cfg"]["embed_dim"])

    @property
    def temperature(self) -> float:
        return 1.0 / math.exp(float(self.base.logit_scale.detach()))

    def add_lora(self, cfg: Any) -> list[str]:
        """LoRA on both towers' attention and MLP layers (model.lora_target_modules overrides);
        the text and image projections stay trainable, the temperature is the loss's."""
        from .model_builder import lora_targets, wrap_lora

        targets = lora_targets(self.backbone, cfg, family="open_clip")
        self.backbone = wrap_lora(self.backbone, cfg, targets)
        base = self.base
        for head in (getattr(base, "text_projection", None), getattr(base.visual, "proj", None)):
            if head is not None:
                head.requires_grad_(True)
        return targets

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return {"text": self.tokenizer(list(texts))}

    def chunks(self, texts: list[str], images: list[str], *, overhead: int, max_rows: int,
               bucketing: bool = True):
        """Captions (fixed context length, so no bucketing) and images, max_rows at a time."""
        from .batching import Chunks

        inputs = [self.tokenize(texts[s:s + max_rows]) for s in range(0, len(texts), max_rows)]
        inputs += [{"pixel_values": load_pixels(self.image_processor, images[s:s + max_rows])}
                   for s in range(0, len(images), max_rows)]
        return Chunks(inputs, torch.arange(len(texts) + len(images)))

    def forward(self, text: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                **_: Any) -> torch.Tensor:
        if pixel_values is not None:
            out = self.base.encode_image(pixel_values)
        else:
            out = self.base.encode_text(text)
        return nn.functional.normalize(out.float(), dim=-1) if self.normalize else out


def build_open_clip_model(root: Path, cfg: Any) -> OpenClipEncoder:
    try:
        import open_clip
    except ImportError as exc:
        raise ConfigError(f"{root} is an open_clip model, but open_clip is not installed",
                          "pip install open_clip_torch (or the plugin's open_clip extra)") from exc
    if cfg.pooling is not None or cfg.projection_dim is not None:
        raise ConfigError(f"{cfg.model_name} is an open_clip model: it has its own pooling and "
                          "projections", "drop model.pooling and model.projection_dim")
    config = json.loads((root / OPEN_CLIP_CONFIG).read_text(encoding="utf-8"))
    name = f"local-dir:{root}"
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        tokenizer = open_clip.get_tokenizer(name)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelSourceError(f"open_clip could not load {root}: {exc}",
                               f"the directory needs {OPEN_CLIP_CONFIG} and {OPEN_CLIP_WEIGHTS}") from exc
    if cfg.torch_dtype:
        model = model.to(getattr(torch, cfg.torch_dtype))
    if cfg.use_gradient_checkpointing:
        model.set_grad_checkpointing(True)
    # the temperature is the loss's parameter (started from this one, written back on export)
    model.logit_scale.requires_grad_(False)
    if getattr(model, "logit_bias", None) is not None:
        model.logit_bias.requires_grad_(False)
    return OpenClipEncoder(model, tokenizer, preprocess, config, normalize=cfg.normalize,
                           source=str(cfg.model_name))


def export_open_clip(encoder: OpenClipEncoder, staging: Path, temperature: float | None) -> dict[str, Any]:
    """open_clip's local-dir format into `staging` (the caller writes the manifest)."""
    from safetensors.torch import save_file

    from .export import merged_backbone

    backbone, merged = merged_backbone(encoder)
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    if temperature is not None:
        state["logit_scale"] = torch.tensor(math.log(1.0 / temperature), dtype=state["logit_scale"].dtype)
    save_file(state, str(staging / OPEN_CLIP_WEIGHTS))
    atomic_write_json(staging / OPEN_CLIP_CONFIG, encoder.config)
    return {"format": "open_clip", "embedding_dim": encoder.embedding_dim, "lora_merged": merged}
