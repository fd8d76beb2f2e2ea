"""Typed schemas of the embedding trainer's options: Hydra rejects a wrong type or an unknown key
in trainer/embedding.yaml, task/embed.yaml or on the command line before anything runs, and the
Python API validates the same dataclasses with `from_options`.

`ModelConfig` holds vembed's documented model-builder keys under their documented names and
defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlplatform.api import ComponentConfig

POOLING_MODES = ("cls", "mean", "last_token")
SCHEDULERS = ("cosine", "linear", "constant")
MIXED_PRECISION = ("no", "fp16", "bf16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
TORCH_DTYPES = ("float32", "float16", "bfloat16")
DATA_FORMATS = ("jsonl", "csv", "parquet", "hf")


@dataclass
class ModelConfig:
    """The student model (vembed's model-builder keys), and the teacher for distillation."""

    # a local model directory (transformers or sentence-transformers format) or a hub repo id
    model_name: str = "???"
    # the registered model family (kind embedding_model) that builds it: transformers, clip,
    # open_clip, towers or a plugin's; null: the first family that recognises model_name
    family: str | None = None
    # float32, float16 or bfloat16 weights; null is float32 (use optim.mixed_precision for speed)
    torch_dtype: str | None = None
    # an image tower (a transformers vision model directory) paired with model_name as the text
    # tower; both are projected to projection_dim (required then). null: a text or CLIP model
    image_model_name: str | None = None
    # cls, mean or last_token; null reads a sentence-transformers pooling config, else mean
    pooling: str | None = None
    # size of an optional linear projection head on the pooled embedding (null: none)
    projection_dim: int | None = None
    # L2-normalise embeddings (cosine similarity)
    normalize: bool = True
    # longest tokenised input; longer texts are truncated
    max_seq_length: int = 128
    # LoRA through peft on the transformer (the projection head stays fully trainable)
    use_lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # null: detected from the model family (bert: query/key/value/dense, llama/qwen: *_proj, ...)
    lora_target_modules: list[str] | None = None
    # activation recomputation, with or without LoRA
    use_gradient_checkpointing: bool = False
    # passed to transformers' gradient_checkpointing_enable (default {use_reentrant: false})
    gradient_checkpointing_kwargs: dict[str, Any] = field(default_factory=dict)
    # torch.compile the model
    compile: bool = False
    compile_mode: str = "default"
    # DDP: true disables the static-graph optimisation (parameters unused in some steps)
    find_unused_parameters: bool = False
    # distillation teacher: a model directory or repo id, and ModelConfig options for it
    teacher_model_name: str | None = None
    teacher_model_config: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Query/positive pairs with optional hard negatives, from JSONL, CSV, Parquet or a Hugging
    Face `datasets` dataset saved on disk."""

    # the training file (.jsonl, .csv or .parquet) or a datasets save_to_disk directory
    train_file: str = "???"
    # a separate validation file; else validation_split holds out a fraction of train_file
    validation_file: str | None = None
    validation_split: float = 0.0
    # jsonl, csv, parquet or hf (a datasets save_to_disk directory of one split); null infers it
    # from the suffix or the directory
    format: str | None = None
    # column mapping: which column holds the query, the positive, and hard negatives (each
    # negative column holds a string, or in JSONL/Parquet a list of strings)
    query_column: str = "query"
    positive_column: str = "positive"
    negative_columns: list[str] = field(default_factory=list)
    # image-text pairs (a CLIP model): the column holding each record's image file (relative to
    # the data file's folder); query_column then holds its caption, and negative_columns hold
    # hard-negative image files
    image_column: str | None = None


@dataclass
class LossConfig:
    """Symmetric InfoNCE over the in-batch pool (positives of the other rows + hard negatives)."""

    # the registered loss (kind embedding_loss): infonce, or a plugin's
    name: str = "infonce"
    # options of a plugin's loss (its factory reads them); infonce takes none
    options: dict[str, Any] = field(default_factory=dict)
    # softmax temperature tau (logits are cosine / tau)
    temperature: float = 0.05
    # learn tau (as a log-scale parameter the optimizer updates), starting at `temperature`
    learnable_temperature: bool = False
    # mask in-batch candidates whose text equals the row's positive (or query): no false negatives
    mask_duplicates: bool = True
    # also the document-to-query direction
    symmetric: bool = True
    # several processes: every process's queries and documents join the pool (a differentiable
    # gather; the gradients equal one process with the whole global batch)
    cross_device_negatives: bool = False
    # Matryoshka: also train these leading sizes of the embedding (e.g. [32, 64]); [] is off
    matryoshka_dims: list[int] = field(default_factory=list)
    # distillation from model.teacher_model_name (used only when a teacher is named): kl (KL
    # divergence of the teacher's over the student's similarity distributions, times T^2) or mse
    # (between the similarity matrices), added to InfoNCE with this weight
    distillation_loss: str = "kl"
    distillation_weight: float = 1.0
    distillation_temperature: float = 0.05


@dataclass
class OptimConfig:
    """AdamW (no weight decay on biases and norms) with a warmup schedule, on accelerate."""

    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-8
    # cosine, linear or constant, after warmup
    scheduler: str = "linear"
    warmup_steps: int = 0
    # used when warmup_steps is 0: a fraction of the total optimizer steps
    warmup_ratio: float = 0.0
    # clip the gradient norm (0: no clipping)
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    # no, fp16 or bf16, passed to accelerate's Accelerator
    mixed_precision: str = "no"


@dataclass
class EmbeddingTrainerConfig(ComponentConfig):
    """trainer=embedding: fine-tune a text embedding model on query/positive pairs."""

    name: str = "embedding"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # examples per optimizer micro-step (per process)
    batch_size: int = 32
    epochs: int = 1
    # stop after this many optimizer steps (null: run all epochs)
    max_steps: int | None = None
    # save a resumable checkpoint every N optimizer steps (0: only at the end)
    checkpoint_every: int = 0
    # where checkpoints, the export, metrics.json and the curve go (null: the Hydra run dir)
    output_dir: str | None = None
    # resume from a checkpoint directory, or "latest" (the newest under output_dir/checkpoints)
    resume_from: str | None = None
    # retrieval evaluation on the validation set before and after training (and every N steps)
    eval_before: bool = True
    eval_after: bool = True
    eval_every: int = 0
    eval_batch_size: int = 64
    # log the loss every N optimizer steps
    log_every: int = 10
    # accelerate trackers for the loss, learning rate, temperature and evaluations, e.g.
    # [tensorboard] (needs the tensorboard package); written under output_dir/trackers
    log_with: list[str] = field(default_factory=list)
    # write a sentence-transformers model directory (LoRA merged) with a manifest at the end
    export: bool = True
    # with LoRA: export the PEFT adapter alone (on its base model, named by path) instead of
    # merging it into the transformer
    export_adapter: bool = False
    # encode each batch as length-sorted chunks padded only to their own longest text (the same
    # embeddings, fewer padding tokens computed); false: queries, then documents, each padded
    # to their own longest text
    length_bucketing: bool = True
    # GradCache: encode the batch in chunks of at most grad_cache_chunk_size texts, so
    # activation memory stays that of one chunk whatever batch_size is (costs a second forward)
    grad_cache: bool = False
    grad_cache_chunk_size: int = 32


@dataclass
class EmbedTaskConfig(ComponentConfig):
    """task=embed: encode texts (and, with an image-text model, images) with an exported model."""

    name: str = "embed"
    # an exported model directory (with manifest.json) from trainer=embedding
    model_dir: str = "???"
    # texts to encode, or a file with one text per line (texts_file)
    texts: list[str] = field(default_factory=list)
    texts_file: str | None = None
    # image files to encode with an image-text export (rows after the texts' rows)
    images: list[str] = field(default_factory=list)
    batch_size: int = 32
    # write embeddings.npy in the run dir
    save: bool = True
