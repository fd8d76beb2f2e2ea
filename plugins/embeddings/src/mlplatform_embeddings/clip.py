"""Image-text models: a transformers CLIP (text tower + image tower + projections) behind the
same interface as TextEncoder, so the trainer, the losses, GradCache and evaluation treat a batch
of captions and images like a batch of queries and documents.

`forward(**chunk)` encodes a chunk of tokenised texts (input_ids) or of images (pixel_values);
`encode(items)` takes texts, or `ImagePath`s (files read with PIL and the model's image
processor)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlplatform.api import ConfigError, ModelSourceError


class ImagePath(str):
    """A path to an image file, as opposed to a text (data.image_column yields these)."""


def is_images(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(item, ImagePath) for item in items)


def load_pixels(image_processor: Any, paths: list[str]) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise ConfigError(f"cannot read image {path}: {exc}", "fix or remove that record") from exc
    return image_processor(images=images, return_tensors="pt")["pixel_values"]


class ImageTextBase(nn.Module):
    """What every image-text model shares: tokenising captions, reading images, building a
    batch's chunks, `encode`. Subclasses implement forward(input_ids=, attention_mask=) for
    texts and forward(pixel_values=) for images, and `embedding_dim`."""

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(list(texts), padding=True, truncation=True,
                                   max_length=self.max_seq_length, return_tensors="pt"))

    def chunks(self, texts: list[str], images: list[str], *, overhead: int, max_rows: int,
               bucketing: bool = True):
        """Captions (length-bucketed) and images (chunks of max_rows), as one Chunks whose
        outputs come back in the order texts + images."""
        from .batching import Chunks, tokenize_chunks

        text_part = tokenize_chunks(self.tokenizer, texts, self.max_seq_length, overhead=overhead,
                                    max_rows=max_rows, bucketing=bucketing)
        inputs = list(text_part.inputs)
        for start in range(0, len(images), max_rows):
            inputs.append({"pixel_values": load_pixels(self.image_processor, images[start:start + max_rows])})
        restore = torch.cat([text_part.restore, torch.arange(len(texts), len(texts) + len(images))])
        return Chunks(inputs, restore)

    @torch.no_grad()
    def encode(self, items: list[str], batch_size: int = 64, device: Any = None) -> torch.Tensor:
        """Embeddings of texts, or of images when every item is an ImagePath (float32, CPU)."""
        was_training = self.training
        self.eval()
        device = device or next(self.parameters()).device
        outputs = []
        try:
            for start in range(0, len(items), batch_size):
                part = list(items[start:start + batch_size])
                if is_images(part):
                    inputs = {"pixel_values": load_pixels(self.image_processor, part)}
                else:
                    inputs = self.tokenize(part)
                outputs.append(self(**{k: v.to(device) for k, v in inputs.items()}).float().cpu())
        finally:
            self.train(was_training)
        return torch.cat(outputs) if outputs else torch.empty(0, self.embedding_dim)


class ImageTextEncoder(ImageTextBase):
    """A CLIP model as an embedding model: texts and images to L2-normalised shared-space vectors.

    `backbone` is the transformers CLIPModel (peft-wrapped after apply_lora); `logit_scale` is
    its learned temperature, which the trainer starts its learnable temperature from and writes
    back on export."""

    family = "clip"
    pooling = "clip"
    projection = None

    def __init__(self, backbone: nn.Module, tokenizer: Any, image_processor: Any, *,
                 normalize: bool = True, max_seq_length: int = 77, source: str = ""):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.normalize = normalize
        self.max_seq_length = max_seq_length
        self.source = source

    @property
    def base(self) -> nn.Module:
        """The CLIPModel itself (LoRA layers, when present, are inside it)."""
        return self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") else self.backbone

    @property
    def embedding_dim(self) -> int:
        return int(self.base.config.projection_dim)

    @property
    def temperature(self) -> float:
        return 1.0 / math.exp(float(self.base.logit_scale.detach()))

    def after_lora(self) -> None:
        """vembed's defect fixed: with LoRA on the towers, the projections still train (the
        temperature is the loss's own parameter, trained whatever LoRA does)."""
        for head in (self.base.visual_projection, self.base.text_projection):
            head.requires_grad_(True)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        base = self.base
        if pixel_values is not None:
            pooled = base.vision_model(pixel_values=pixel_values).pooler_output
            out = base.visual_projection(pooled)
        else:
            pooled = base.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
            out = base.text_projection(pooled)
        return nn.functional.normalize(out.float(), dim=-1) if self.normalize else out


def build_image_text_model(root: Path, cfg: Any) -> ImageTextEncoder:
    """A CLIP model directory (save_pretrained of the model, its tokenizer and image processor)."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    if cfg.pooling not in (None,) or cfg.projection_dim is not None:
        raise ConfigError(
            f"{cfg.model_name} is a CLIP model: it has its own pooling and projections",
            "drop model.pooling and model.projection_dim",
        )
    dtype = getattr(torch, cfg.torch_dtype or "float32")
    try:
        backbone = CLIPModel.from_pretrained(str(root), dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(root))
        image_processor = AutoImageProcessor.from_pretrained(str(root))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelSourceError(
            f"could not load a CLIP model, tokenizer and image processor from {root}: {exc}",
            "the directory needs config.json, the weights, the tokenizer files and "
            "preprocessor_config.json (save_pretrained of each)",
        ) from exc
    # the temperature is the loss's parameter (started from this one, written back on export)
    backbone.logit_scale.requires_grad_(False)
    limit = int(backbone.config.text_config.max_position_embeddings)
    return ImageTextEncoder(backbone, tokenizer, image_processor, normalize=cfg.normalize,
                            max_seq_length=min(cfg.max_seq_length, limit), source=str(cfg.model_name))


@torch.no_grad()
def zero_shot_accuracy(image_embeddings: torch.Tensor, class_embeddings: torch.Tensor,
                       labels: list[int]) -> float:
    """Accuracy of classifying each image as its most similar class text. Ties share the credit
    (1 / number of classes tied at the top, when the true class is among them): a collapsed
    model, whose scores are all equal, scores exactly chance (1 / classes), never 1.0."""
    scores = image_embeddings.float() @ class_embeddings.float().T
    top = scores.max(dim=1, keepdim=True).values
    tied = scores >= top
    truth = torch.tensor(labels)
    hit = tied[torch.arange(len(labels)), truth].float() / tied.sum(dim=1).float()
    return float(hit.mean()) if len(labels) else float("nan")


def evaluate_zero_shot(encoder: ImageTextEncoder, pairs: list[Any], batch_size: int = 64,
                       device: Any = None) -> dict[str, float]:
    """Zero-shot classification of the pairs' images among the pairs' distinct captions (the
    class prompts, e.g. "a photo of the digit three")."""
    classes: dict[str, int] = {}
    for pair in pairs:
        classes.setdefault(pair.query, len(classes))
    images = [pair.positive for pair in pairs]
    image_emb = encoder.encode(images, batch_size=batch_size, device=device)
    class_emb = encoder.encode(list(classes), batch_size=batch_size, device=device)
    labels = [classes[pair.query] for pair in pairs]
    return {"zero_shot_accuracy": zero_shot_accuracy(image_emb, class_emb, labels),
            "zero_shot_classes": len(classes), "zero_shot_chance": 1.0 / len(classes)}
