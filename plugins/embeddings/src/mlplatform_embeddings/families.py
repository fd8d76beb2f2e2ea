"""Model families and losses are registry components, so a plugin adds one exactly as this plugin
adds its own (no special path for the built-ins):

    from mlplatform.api import hookimpl
    from mlplatform_embeddings import EmbeddingModelFamily

    @hookimpl
    def register_components(registry):
        registry.add("embedding_model", "my_family", EmbeddingModelFamily(build=build_my_model))
        registry.add("embedding_loss", "my_loss", make_my_loss)

- `embedding_model`: an `EmbeddingModelFamily`. `build(cfg: ModelConfig)` returns the encoder;
  `detect(root, cfg)` (optional) claims a model directory when `model.family` is null (families
  are asked in descending `priority`); `export(encoder, directory, info, temperature, adapter)`
  (optional) writes the trained model, else the export of the encoder's class's family is used.
- `embedding_loss`: a factory `make(cfg: LossConfig) -> nn.Module`, the module called as
  `loss(query, positive, negatives, query_ids=, doc_ids=, negative_ids=)`; its parameters are
  trained with the model, and a `temperature` property, if any, is logged.

Nothing here imports torch: the plugin registers these when mlplatform starts."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlplatform.api import get_registry

MODEL_KIND = "embedding_model"
LOSS_KIND = "embedding_loss"


@dataclass(frozen=True)
class EmbeddingModelFamily:
    """How to build (and recognise, and export) one family of embedding models."""

    # build(cfg: ModelConfig) -> encoder (TextEncoder, or a module with the same interface)
    build: Callable[[Any], Any]
    # detect(root: Path, cfg: ModelConfig) -> bool; None: only selected by model.family=NAME
    detect: Callable[[Path, Any], bool] | None = None
    # families that detect are asked highest priority first (the plain text encoder is last)
    priority: int = 0
    # export(encoder, directory, info, temperature, adapter) -> Path; None: the export of the
    # family named by the encoder's class attribute `family`
    export: Callable[..., Path] | None = None


def model_family(name: str) -> EmbeddingModelFamily:
    """The registered family `name` (UnknownNameError with the closest match otherwise)."""
    family = get_registry().get(MODEL_KIND, name)
    return family if isinstance(family, EmbeddingModelFamily) else EmbeddingModelFamily(build=family)


def detect_family(root: Path, cfg: Any) -> str | None:
    """The name of the first family (by priority) whose detect() claims `root`."""
    families = [(name, model_family(name)) for name in get_registry().names(MODEL_KIND)]
    for name, family in sorted(families, key=lambda item: -item[1].priority):
        if family.detect is not None and family.detect(root, cfg):
            return name
    return None


def loss_factory(name: str) -> Callable[[Any], Any]:
    """The registered loss factory `name` (UnknownNameError with the closest match otherwise)."""
    return get_registry().get(LOSS_KIND, name)


# --- the built-in families and loss (registered by plugin.py like any plugin's) ---------------


def _config_model_type(root: Path) -> str | None:
    try:
        return json.loads((root / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def _build_text(cfg: Any) -> Any:
    from .model_builder import build_text_encoder

    return build_text_encoder(cfg)


def _build_clip(cfg: Any) -> Any:
    from .model_builder import build_clip

    return build_clip(cfg)


def _build_open_clip(cfg: Any) -> Any:
    from mlplatform.api import resolve_model_source

    from .openclip import build_open_clip_model

    return build_open_clip_model(resolve_model_source(cfg.model_name, required_file=None), cfg)


def _build_towers(cfg: Any) -> Any:
    from mlplatform.api import resolve_model_source

    from .model_builder import build_model
    from .towers import TOWERS_FILE, build_tower_pair, load_tower_pair

    if cfg.image_model_name:
        return build_tower_pair(cfg, build_model)
    root = resolve_model_source(cfg.model_name, required_file=None)
    if not (root / TOWERS_FILE).is_file():
        from mlplatform.api import ConfigError

        raise ConfigError(f"model.family=towers needs model.image_model_name or a directory with "
                          f"{TOWERS_FILE}; {root} has neither", "set model.image_model_name")
    return load_tower_pair(root, cfg, build_model)


def _export_text(encoder, directory, info=None, temperature=None, adapter=False):
    from .export import export_sentence_transformers

    return export_sentence_transformers(encoder, directory, info, adapter=adapter)


def _export_adapter(encoder, directory, info, temperature):
    """The PEFT adapter export shared by the image-text families (adapter_export.py)."""
    from .adapter_export import export_adapter

    return export_adapter(encoder, directory, {
        "source": encoder.source, "embedding_dim": encoder.embedding_dim,
        "normalize": encoder.normalize, "max_seq_length": encoder.max_seq_length, **(info or {}),
    }, temperature)


def _export_clip(encoder, directory, info=None, temperature=None, adapter=False):
    from .export import export_image_text

    if adapter:
        return _export_adapter(encoder, directory, info, temperature)
    return export_image_text(encoder, directory, info, temperature)


def _export_open_clip(encoder, directory, info=None, temperature=None, adapter=False):
    from .export import export_staged
    from .openclip import export_open_clip

    if adapter:
        return _export_adapter(encoder, directory, info, temperature)
    return export_staged(directory, lambda staging: export_open_clip(encoder, staging, temperature),
                         {"source": encoder.source, "normalize": encoder.normalize,
                          "max_seq_length": encoder.max_seq_length, **(info or {})})


def _export_towers(encoder, directory, info=None, temperature=None, adapter=False):
    from .export import export_staged
    from .towers import export_tower_pair

    if adapter:
        return _export_adapter(encoder, directory, info, temperature)
    return export_staged(directory, lambda staging: export_tower_pair(encoder, staging),
                         {"source": encoder.source, "embedding_dim": encoder.embedding_dim,
                          "max_seq_length": encoder.max_seq_length, **(info or {})})


BUILTIN_FAMILIES = {
    # a text tower paired with an image tower (model.image_model_name), or its export
    "towers": EmbeddingModelFamily(
        build=_build_towers, priority=40, export=_export_towers,
        detect=lambda root, cfg: bool(cfg.image_model_name) or (root / "towers.json").is_file()),
    # open_clip's local-dir format
    "open_clip": EmbeddingModelFamily(
        build=_build_open_clip, priority=30, export=_export_open_clip,
        detect=lambda root, cfg: (root / "open_clip_config.json").is_file()),
    # a transformers CLIP directory
    "clip": EmbeddingModelFamily(
        build=_build_clip, priority=20, export=_export_clip,
        detect=lambda root, cfg: _config_model_type(root) == "clip"),
    # any transformers text encoder or sentence-transformers directory: the fallback
    "transformers": EmbeddingModelFamily(
        build=_build_text, priority=0, export=_export_text, detect=lambda root, cfg: True),
}


def make_infonce(cfg: Any) -> Any:
    """loss.name=infonce: symmetric InfoNCE with the LossConfig's temperature options."""
    from mlplatform.api import ConfigError

    from .losses import InfoNCELoss

    if cfg.options:
        raise ConfigError(f"loss.options {sorted(cfg.options)} are not options of infonce (it "
                          "takes none: its settings are loss.temperature, ...)",
                          "drop trainer.loss.options")
    return InfoNCELoss(cfg.temperature, learnable_temperature=cfg.learnable_temperature,
                       mask_duplicates=cfg.mask_duplicates, symmetric=cfg.symmetric)


BUILTIN_LOSSES = {"infonce": make_infonce}
