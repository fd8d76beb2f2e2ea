"""Export a trained TextEncoder as a sentence-transformers model directory (LoRA merged) with a
manifest, and load one back (verified against its manifest) to embed texts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlplatform.api import (
    ArtifactError,
    ConfigError,
    atomic_write_json,
    remove_stale_staging,
    require_keys,
    staged_directory,
    verify_artifact,
    write_manifest,
)

from .encoder import IDENTITY, ST_DENSE, ST_NORMALIZE, ST_POOLING, ST_TRANSFORMER, TextEncoder

EXPORT_KIND = "embedding-model"


def merged_backbone(encoder: Any) -> tuple[torch.nn.Module, bool]:
    """A copy of the backbone with LoRA adapters merged in (the training model is left as is)."""
    return merge_lora(encoder.backbone)


def merge_lora(module: torch.nn.Module) -> tuple[torch.nn.Module, bool]:
    """`module` itself, or a copy with its LoRA adapters merged in (and whether it had any)."""
    backbone = module
    if hasattr(backbone, "merge_and_unload"):
        return copy.deepcopy(backbone).merge_and_unload(), True
    return backbone, False


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj)


def export_sentence_transformers(
    encoder: TextEncoder, directory: str | Path, info: dict[str, Any] | None = None,
    *, adapter: bool = False,
) -> Path:
    """Write `encoder` to `directory` (replacing an earlier export atomically): the transformer
    at the root, 1_Pooling, 2_Dense (projection head, if any), Normalize, plus manifest.json.

    LoRA is merged into a copy of the transformer, unless `adapter`: then the root holds the PEFT
    adapter alone (adapter_config.json naming the base model, adapter_model.safetensors), which
    `build_model` / `load_exported` put back on the base model."""
    from safetensors.torch import save_file

    final = Path(directory)
    remove_stale_staging(final)
    if adapter and not hasattr(encoder.backbone, "merge_and_unload"):
        raise ConfigError("an adapter export needs a LoRA model", "set model.use_lora=true, or drop "
                          "trainer.export_adapter")
    backbone, merged = (encoder.backbone, False) if adapter else merged_backbone(encoder)
    pooling_mode = encoder.pooling
    dim = int(backbone.config.hidden_size)
    with staged_directory(final) as staging:
        backbone.save_pretrained(staging)
        encoder.tokenizer.save_pretrained(staging)
        _write_json(staging / "sentence_bert_config.json",
                    {"max_seq_length": encoder.max_seq_length, "do_lower_case": False})
        _write_json(staging / "1_Pooling" / "config.json", {
            "word_embedding_dimension": dim,
            "pooling_mode_cls_token": pooling_mode == "cls",
            "pooling_mode_mean_tokens": pooling_mode == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": pooling_mode == "last_token",
            "include_prompt": True,
        })
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": ST_TRANSFORMER},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_POOLING},
        ]
        if encoder.projection is not None:
            linear = encoder.projection
            _write_json(staging / "2_Dense" / "config.json", {
                "in_features": linear.in_features, "out_features": linear.out_features,
                "bias": linear.bias is not None, "activation_function": IDENTITY,
            })
            weights = {f"linear.{k}": v.detach().cpu().contiguous() for k, v in linear.state_dict().items()}
            save_file(weights, str(staging / "2_Dense" / "model.safetensors"))
            modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": ST_DENSE})
        if encoder.normalize:
            index = len(modules)
            modules.append({"idx": index, "name": str(index), "path": f"{index}_Normalize",
                            "type": ST_NORMALIZE})
        _write_json(staging / "modules.json", modules)
        _write_json(staging / "config_sentence_transformers.json",
                    {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"})
        write_manifest(staging, {
            "kind": EXPORT_KIND,
            "format": "sentence-transformers",
            "source": encoder.source,
            "pooling": pooling_mode,
            "embedding_dim": encoder.embedding_dim,
            "normalize": encoder.normalize,
            "max_seq_length": encoder.max_seq_length,
            "lora_merged": merged,
            "adapter": adapter,
            **({"base_model": backbone.peft_config["default"].base_model_name_or_path} if adapter else {}),
            **(info or {}),
        })
    return final


def export_image_text(encoder: Any, directory: str | Path, info: dict[str, Any] | None = None,
                      temperature: float | None = None) -> Path:
    """Write a trained ImageTextEncoder as a transformers CLIP directory (LoRA merged; the
    trained temperature written into logit_scale), its tokenizer and image processor, plus
    manifest.json."""
    import math

    final = Path(directory)
    remove_stale_staging(final)
    backbone, merged = merged_backbone(encoder)
    if temperature is not None:
        backbone = copy.deepcopy(backbone) if backbone is encoder.backbone else backbone
        with torch.no_grad():
            backbone.logit_scale.fill_(math.log(1.0 / temperature))
    with staged_directory(final) as staging:
        backbone.save_pretrained(staging)
        encoder.tokenizer.save_pretrained(staging)
        encoder.image_processor.save_pretrained(staging)
        write_manifest(staging, {
            "kind": EXPORT_KIND, "format": "clip", "source": encoder.source,
            "embedding_dim": encoder.embedding_dim, "normalize": encoder.normalize,
            "max_seq_length": encoder.max_seq_length, "lora_merged": merged, **(info or {}),
        })
    return final


def export_staged(directory: str | Path, write: Any, info: dict[str, Any]) -> Path:
    """Build an export in a staging directory with `write(staging) -> manifest fields`, then
    its manifest (kind embedding-model plus `info`), and swap it into place atomically."""
    final = Path(directory)
    remove_stale_staging(final)
    with staged_directory(final) as staging:
        written = write(staging)
        write_manifest(staging, {"kind": EXPORT_KIND, **info, **written})
    return final


def export_model(encoder: Any, directory: str | Path, info: dict[str, Any] | None = None,
                 temperature: float | None = None, adapter: bool = False) -> Path:
    """The export of the family that built `encoder` (its `family`), or, when that family has
    no export of its own, of the family its class names: sentence-transformers for text, a
    CLIP / open_clip / two-tower directory for image-text."""
    from .families import model_family

    names = [getattr(encoder, "family", None), getattr(type(encoder), "family", None)]
    for name in dict.fromkeys(n for n in names if n):
        family = model_family(name)
        if family.export is not None:
            return family.export(encoder, directory, info, temperature, adapter)
    raise ConfigError(f"the model family {names[0]!r} has no export",
                      "set trainer.export=false, or give the family an export")


def load_exported(directory: str | Path) -> Any:
    """The encoder of an exported model directory (a TextEncoder, an image-text encoder, or
    an adapter export's base with its adapters), after checking every file against its
    manifest (ArtifactError on a missing, truncated or altered file)."""
    from .adapter_export import ADAPTER_FORMAT, load_adapter_export
    from .model_builder import build_model

    manifest = verify_artifact(directory)
    require_keys(manifest, {"kind": str, "normalize": bool, "max_seq_length": int}, Path(directory))
    if manifest["kind"] != EXPORT_KIND:
        raise ArtifactError(
            f"{directory} holds a {manifest['kind']!r} artifact, not an exported embedding model",
            "point at the model/ directory written by trainer=embedding",
        )
    if manifest.get("format") == ADAPTER_FORMAT:  # an image-text model's PEFT adapter
        return load_adapter_export(directory, manifest)
    model = build_model({
        "model_name": str(directory),
        "normalize": manifest["normalize"],
        "max_seq_length": manifest["max_seq_length"],
    })
    model.eval()
    return model


def embed(model_dir: str | Path, texts: list[str], batch_size: int = 32, device: Any = "cpu",
          images: list[str] = ()) -> np.ndarray:
    """Embeddings (len(texts) + len(images), dim) as float32 numpy, from an exported model
    directory: the texts' rows, then the images' (an image-text model's image files)."""
    from .clip import ImagePath

    if not texts and not images:
        raise ConfigError("nothing to embed", "pass texts=[...] / a texts_file with one per line, "
                          "or images=[...] for an image-text model")
    if batch_size < 1:
        raise ConfigError(f"batch_size is {batch_size}; it must be at least 1", "pass batch_size=32")
    model = load_exported(model_dir).to(device)
    if images and getattr(model, "image_processor", None) is None:
        raise ConfigError(f"{model_dir} is a text model: it cannot embed images",
                          "pass texts, or an image-text model's export")
    for image in images:
        if not Path(image).is_file():
            raise ConfigError(f"image file {image} does not exist", "check the path")
    parts = []
    if texts:
        parts.append(model.encode(list(texts), batch_size=batch_size, device=device))
    if images:
        parts.append(model.encode([ImagePath(i) for i in images], batch_size=batch_size, device=device))
    return torch.cat(parts).numpy()


def read_texts_file(path: str | Path) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read texts file {path}: {exc}", "check the path") from exc
    return [line for line in lines if line.strip()]

