"""Hook implementations: what the embeddings plugin adds to mlplatform (registrations only)."""

from __future__ import annotations

from mlplatform.api import hookimpl

from .families import BUILTIN_FAMILIES, BUILTIN_LOSSES, LOSS_KIND, MODEL_KIND
from .schemas import EmbeddingTrainerConfig, EmbedTaskConfig


def _run_trainer(cfg):
    """trainer=embedding: contrastive fine-tuning of a text embedding model (run(cfg) -> summary)."""
    from .job import run_trainer

    return run_trainer(cfg)


def _run_embed_task(cfg):
    """The `embed` task: run(cfg) -> {"embeddings": [[float, ...], ...], "dimension", "texts",
    "model_dir", "path"}; cfg.task holds model_dir, texts / texts_file, batch_size, save
    (EmbedTaskConfig); cfg.device picks the device."""
    from .job import run_embed_task

    return run_embed_task(cfg)


@hookimpl
def register_components(registry):
    """The built-in model families and losses, through the same kinds a plugin uses."""
    for name, family in BUILTIN_FAMILIES.items():
        registry.add(MODEL_KIND, name, family, description="embedding model family")
    for name, factory in BUILTIN_LOSSES.items():
        registry.add(LOSS_KIND, name, factory, description="embedding contrastive loss")


@hookimpl
def register_trainers(registry):
    registry.add("trainer", "embedding", _run_trainer,
                 description="fine-tune a text embedding model on query/positive pairs (InfoNCE)")


@hookimpl
def register_model_managers(registry):
    registry.add("task", "embed", _run_embed_task,
                 description="embed texts with a model exported by trainer=embedding")


@hookimpl
def register_config_groups(registry):
    registry.add_config_package("mlplatform_embeddings.conf")
    registry.add_config_schema("trainer", "embedding", EmbeddingTrainerConfig)
    registry.add_config_schema("task", "embed", EmbedTaskConfig)
