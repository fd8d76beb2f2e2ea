"""A text tower paired with an image tower (LiT / two-tower CLIP-style training from separate
models): any text encoder this plugin loads (pooling, projection head to `projection_dim`) and
a transformers vision model (ViT, DINOv2, CLIP's vision tower, ...) whose pooled output is
projected to the same size.

    build_model({"model_name": "text/model", "image_model_name": "vision/model", "projection_dim": 256})

Exported as a directory with the text tower in sentence-transformers format under text/, the
vision model and its image processor under image/, the image projection beside them, and
towers.json saying so; build_model loads such a directory back."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlplatform.api import ConfigError, ModelSourceError, atomic_write_json, resolve_model_source

from .clip import ImageTextBase
from .encoder import TextEncoder

TOWERS_FILE = "towers.json"


class TowerPairEncoder(ImageTextBase):
    """texts through `text` (a TextEncoder with its projection head), images through `image`
    (a vision model) then `image_projection`; both L2-normalised in one space."""

    family = "towers"
    pooling = "towers"
    projection = None

    def __init__(self, text: TextEncoder, image: nn.Module, image_processor: Any,
                 image_projection: nn.Linear, *, normalize: bool = True, source: str = ""):
        super().__init__()
        if text.embedding_dim != image_projection.out_features:
            raise ConfigError(
                f"the text tower embeds to {text.embedding_dim}, the image projection to "
                f"{image_projection.out_features}", "set model.projection_dim",
            )
        self.text = text
        self.image = image
        self.image_processor = image_processor
        self.image_projection = image_projection
        self.normalize = normalize
        self.source = source

    # the caption side is the text tower's
    tokenizer = property(lambda self: self.text.tokenizer)
    max_seq_length = property(lambda self: self.text.max_seq_length)

    @property
    def embedding_dim(self) -> int:
        return self.image_projection.out_features

    def add_lora(self, cfg: Any) -> list[str]:
        """LoRA on both towers, each with its family's targets (model.lora_target_modules: those
        of the names each tower has, else its family's); the text tower's projection head, the
        image tower's pooler and the image projection stay trainable."""
        from .model_builder import (
            enable_gradient_checkpointing,
            lora_layer_names,
            lora_targets,
            wrap_lora,
        )

        wanted = list(cfg.lora_target_modules or [])
        towers = {"text": self.text.backbone, "image": self.image}
        if wanted:
            everywhere = set().union(*(lora_layer_names(m) for m in towers.values()))
            missing = [t for t in wanted if t not in everywhere]
            if missing:
                raise ConfigError(f"model.lora_target_modules {missing} name no linear layer of "
                                  f"either tower (their layers: {', '.join(sorted(everywhere))})",
                                  "pick names from that list")
        targets = {}
        for side, module in towers.items():
            own = [t for t in wanted if t in lora_layer_names(module)]
            targets[side] = lora_targets(module, dataclasses.replace(cfg, lora_target_modules=own or None))
        self.text.backbone = wrap_lora(self.text.backbone, cfg, targets["text"])
        self.image = wrap_lora(self.image, cfg, targets["image"])
        pooler = getattr(self.image.get_base_model(), "pooler", None)
        if pooler is not None:  # the image tower's pooler feeds the projection: a head
            pooler.requires_grad_(True)
        if cfg.use_gradient_checkpointing:
            enable_gradient_checkpointing(self.text, cfg)
            if cfg.gradient_checkpointing_kwargs.get("use_reentrant"):
                self.image.enable_input_require_grads()  # frozen patch embeddings under LoRA
        return sorted(set(targets["text"]) | set(targets["image"]))

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, **inputs: Any) -> torch.Tensor:
        if pixel_values is None:
            out = self.text(input_ids=input_ids, attention_mask=attention_mask, **inputs)
        else:
            hidden = self.image(pixel_values=pixel_values)
            pooled = getattr(hidden, "pooler_output", None)
            pooled = hidden.last_hidden_state[:, 0] if pooled is None else pooled
            out = self.image_projection(pooled)
        return nn.functional.normalize(out.float(), dim=-1) if self.normalize else out


def _vision_tower(name: str, cfg: Any) -> tuple[nn.Module, Any]:
    from transformers import AutoImageProcessor, AutoModel

    root = resolve_model_source(name, required_file=None)
    dtype = getattr(torch, cfg.torch_dtype or "float32")
    try:
        model = AutoModel.from_pretrained(str(root), dtype=dtype)
        processor = AutoImageProcessor.from_pretrained(str(root))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelSourceError(
            f"could not load a vision model and image processor from {root}: {exc}",
            "model.image_model_name must be a directory with config.json, the weights and "
            "preprocessor_config.json",
        ) from exc
    if hasattr(model, "text_model"):
        raise ConfigError(f"{root} is a whole image-text model, not an image tower",
                          "use it as model.model_name, or point image_model_name at a vision model")
    if cfg.use_gradient_checkpointing and getattr(model, "supports_gradient_checkpointing", False):
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False, **dict(cfg.gradient_checkpointing_kwargs)})
    return model, processor


def build_tower_pair(cfg: Any, build_text: Any) -> TowerPairEncoder:
    """model_name (text) + image_model_name (vision), both projected to projection_dim."""
    if cfg.projection_dim is None:
        raise ConfigError("a text tower paired with an image tower needs model.projection_dim "
                          "(the size of the shared space)", "pass e.g. model.projection_dim=256")
    # family=None: the text tower is a text model (model.family=towers names the pair's family)
    text = build_text(dataclasses.replace(cfg, image_model_name=None, family=None))
    image, processor = _vision_tower(cfg.image_model_name, cfg)
    hidden = int(getattr(image.config, "hidden_size", 0) or image.config.vision_config.hidden_size)
    return TowerPairEncoder(text, image, processor, nn.Linear(hidden, cfg.projection_dim),
                            normalize=cfg.normalize, source=f"{cfg.model_name} + {cfg.image_model_name}")


def export_tower_pair(encoder: TowerPairEncoder, staging: Path) -> dict[str, Any]:
    """Write both towers into `staging` (the caller writes the manifest)."""
    from safetensors.torch import save_file

    from .export import export_sentence_transformers, merge_lora

    export_sentence_transformers(encoder.text, staging / "text")  # LoRA merged
    image, merged_image = merge_lora(encoder.image)
    image.save_pretrained(staging / "image")
    encoder.image_processor.save_pretrained(staging / "image")
    linear = encoder.image_projection
    save_file({k: v.detach().cpu().contiguous() for k, v in linear.state_dict().items()},
              str(staging / "image_projection.safetensors"))
    info = {"format": "towers", "text": "text", "image": "image",
            "image_projection": [linear.in_features, linear.out_features],
            "normalize": encoder.normalize, "image_lora_merged": merged_image}
    atomic_write_json(staging / TOWERS_FILE, info)
    return info


def load_tower_pair(root: Path, cfg: Any, build_text: Any) -> TowerPairEncoder:
    """An exported tower pair (towers.json) back as a TowerPairEncoder."""
    import json

    from safetensors.torch import load_file

    info = json.loads((root / TOWERS_FILE).read_text(encoding="utf-8"))
    text = build_text(dataclasses.replace(cfg, model_name=str(root / info["text"]), projection_dim=None,
                                          image_model_name=None, family=None))
    image, processor = _vision_tower(str(root / info["image"]), cfg)
    linear = nn.Linear(*info["image_projection"])
    linear.load_state_dict(load_file(str(root / "image_projection.safetensors")))
    return TowerPairEncoder(text, image, processor, linear, normalize=info["normalize"], source=str(root))
