"""mlplatform-embeddings: fine-tune text embedding models with contrastive losses on accelerate.

The Python API (usable without Hydra):

- model builder (vembed's API): build_model, build_teacher_model, apply_lora,
  enable_static_graph, compile_model; ModelConfig
- TextEncoder (backbone + cls / mean / last-token pooling + optional projection head)
- data: read_pairs, load_splits, Pair; DataConfig
- losses: InfoNCELoss, MatryoshkaLoss; metrics: retrieval_metrics, evaluate_pairs
- training: train(config, seed=, device=) -> summary; EmbeddingTrainerConfig
- export: export_model (the model family's export; `adapter=True` for the PEFT adapter),
  export_sentence_transformers, export_adapter / load_adapter_export (image-text adapters),
  load_exported, embed
- extension points (registry kinds a plugin adds to): EmbeddingModelFamily (kind
  "embedding_model", MODEL_KIND), loss factories (kind "embedding_loss", LOSS_KIND), build_loss
"""

from .adapter_export import export_adapter, load_adapter_export
from .data import Pair, load_splits, read_pairs
from .encoder import TextEncoder
from .export import embed, export_model, export_sentence_transformers, load_exported
from .families import LOSS_KIND, MODEL_KIND, EmbeddingModelFamily
from .losses import InfoNCELoss, MatryoshkaLoss, build_loss
from .metrics import evaluate_pairs, retrieval_metrics
from .model_builder import (
    apply_lora,
    build_model,
    build_teacher_model,
    compile_model,
    enable_static_graph,
)
from .schemas import (
    DataConfig,
    EmbeddingTrainerConfig,
    EmbedTaskConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
)
from .training import train

__all__ = [
    "build_model", "build_teacher_model", "apply_lora", "enable_static_graph", "compile_model",
    "TextEncoder", "Pair", "read_pairs", "load_splits", "InfoNCELoss", "MatryoshkaLoss", "retrieval_metrics",
    "evaluate_pairs", "train", "export_model", "export_sentence_transformers", "export_adapter",
    "load_adapter_export", "load_exported", "embed",
    "ModelConfig", "DataConfig", "LossConfig", "OptimConfig", "EmbeddingTrainerConfig",
    "EmbedTaskConfig", "EmbeddingModelFamily", "MODEL_KIND", "LOSS_KIND", "build_loss",
]
