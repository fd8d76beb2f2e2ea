"""vembed's model-builder API, with every documented key honoured.

    model = build_model({"model_name": "path/or/repo", "use_lora": True})
    apply_lora(model, config, accelerator)          # in place; also returns the model
    model = accelerator.prepare(model)
    enable_static_graph(model, config, accelerator)
    model = compile_model(model, config, accelerator)

`config` is a `ModelConfig`, or a mapping of its keys (validated like the command line: an unknown
key is a ConfigError naming the nearest valid key). Unlike vembed, gradient checkpointing is
switched on by `build_model` whether or not LoRA is used, and `compile` / `compile_mode` are the
keys the code reads.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlplatform.api import ConfigError, ModelSourceError, from_options, resolve_model_source

from .adapter_export import base_options, is_adapter_export
from .clip import build_image_text_model
from .encoder import TextEncoder, read_sentence_transformers_dir
from .families import detect_family, model_family
from .schemas import COMPILE_MODES, POOLING_MODES, TORCH_DTYPES, ModelConfig

log = logging.getLogger(__name__)

# LoRA targets per model family (config.model_type); others fall back to VEMBED_DEFAULT_TARGETS
LORA_TARGETS = {
    "bert": ["query", "key", "value", "dense"],
    "roberta": ["query", "key", "value", "dense"],
    "xlm-roberta": ["query", "key", "value", "dense"],
    "electra": ["query", "key", "value", "dense"],
    "mpnet": ["q", "k", "v", "o"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "clip": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "clip_text_model": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "t5": ["q", "k", "v", "o"],
    # image towers
    # (transformers 5 renamed ViT's query/key/value to q_proj/k_proj/v_proj/o_proj: either)
    "vit": ["q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value"],
    "dinov2": ["q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value"],
    "clip_vision_model": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "siglip_vision_model": ["q_proj", "k_proj", "v_proj", "out_proj"],
    # open_clip towers: nn.MultiheadAttention (peft wraps it whole) and the MLP
    "open_clip": ["attn", "c_fc", "c_proj"],
}
VEMBED_DEFAULT_TARGETS = ["q_proj", "v_proj", "query", "value", "key", "dense"]


def model_config(config: Any, where: str = "model") -> ModelConfig:
    """A validated ModelConfig from a ModelConfig or a mapping of its keys."""
    if isinstance(config, ModelConfig):
        options = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        options = dict(config)
    else:
        raise ConfigError(
            f"{where}: expected a ModelConfig or a mapping of its keys, got {type(config).__name__}",
            "pass a dict such as {'model_name': 'path/to/model'}",
        )
    cfg = from_options(ModelConfig, options, where)
    _check(cfg, where)
    return cfg


def _check(cfg: ModelConfig, where: str) -> None:
    def bad(key: str, value: Any, allowed: str) -> ConfigError:
        return ConfigError(f"{where}.{key} is {value!r}; {allowed}", f"pass {where}.{key}=VALUE")

    if cfg.torch_dtype is not None and cfg.torch_dtype not in TORCH_DTYPES:
        raise bad("torch_dtype", cfg.torch_dtype, f"use one of {', '.join(TORCH_DTYPES)} or null")
    if cfg.pooling is not None and cfg.pooling not in POOLING_MODES:
        raise bad("pooling", cfg.pooling, f"use one of {', '.join(POOLING_MODES)} or null")
    if cfg.compile_mode not in COMPILE_MODES:
        raise bad("compile_mode", cfg.compile_mode, f"use one of {', '.join(COMPILE_MODES)}")
    for key in ("lora_r", "lora_alpha", "max_seq_length"):
        if getattr(cfg, key) < 1:
            raise bad(key, getattr(cfg, key), "it must be at least 1")
    if cfg.projection_dim is not None and cfg.projection_dim < 1:
        raise bad("projection_dim", cfg.projection_dim, "it must be at least 1 (or null)")
    if not 0.0 <= cfg.lora_dropout < 1.0:
        raise bad("lora_dropout", cfg.lora_dropout, "it must be in [0, 1)")


def build_model(config: Any) -> Any:
    """The student: the encoder of the model family named by `config.family`, or of the first
    registered family (by priority) that recognises `config.model_name` (a towers export or
    image_model_name, open_clip, a transformers CLIP, else a transformers text encoder), in
    `torch_dtype`, with gradient checkpointing when `use_gradient_checkpointing` (with or
    without LoRA). LoRA itself is added by `apply_lora`."""
    cfg = model_config(config)
    name = cfg.family
    if name is None:
        root = resolve_model_source(cfg.model_name, required_file=None)
        if is_adapter_export(root):  # an image-text adapter export: its base, then the adapters
            return _adapter_export_model(root, cfg)
        name = detect_family(root, cfg)
        if name is None:
            raise ConfigError(f"no installed model family recognises {root}",
                              "set model.family to a family that can build it (python -m mlplatform "
                              "job=plugins lists them as embedding_model)")
    model = model_family(name).build(cfg)
    if getattr(model, "family", None) != name:
        model.family = name  # export and reload through the family that built it
    model.build_options = base_options(cfg, name)  # what an adapter export rebuilds
    return model


def _adapter_export_model(root: Path, cfg: ModelConfig) -> Any:
    from .adapter_export import load_adapter_export

    if cfg.use_lora:
        raise ConfigError(f"{root} is an adapter export: LoRA cannot be added on top of it",
                          "train from its merged export (trainer.export_adapter=false) or from "
                          "its base model (manifest.json, base_model.model_name)")
    return load_adapter_export(root, torch_dtype=cfg.torch_dtype)


def build_clip(cfg: ModelConfig) -> Any:
    """model.family=clip: a transformers CLIP directory as an ImageTextEncoder."""
    model = build_image_text_model(resolve_model_source(cfg.model_name, required_file=None), cfg)
    if cfg.use_gradient_checkpointing:
        enable_gradient_checkpointing(model, cfg)
    return model


def build_text_encoder(cfg: ModelConfig) -> TextEncoder:
    """model.family=transformers: a transformers text encoder (or a sentence-transformers
    directory, its pooling and Dense head read) with pooling and an optional projection head."""
    from transformers import AutoModel, AutoTokenizer

    if cfg.image_model_name:
        raise ConfigError("model.image_model_name needs the towers family",
                          "drop model.family (or set model.family=towers)")
    root = resolve_model_source(cfg.model_name, required_file=None)
    layout = read_sentence_transformers_dir(root)
    transformer_dir = layout.transformer_dir if layout else root
    adapter = (transformer_dir / "adapter_config.json").is_file()
    if not adapter and not (transformer_dir / "config.json").is_file():
        raise ModelSourceError(
            f"{transformer_dir} has no config.json: not a transformers model directory",
            "point model_name at a directory written by save_pretrained (or a sentence-transformers "
            "model directory)",
        )
    # null means float32 (transformers 4's default, which vembed's null meant): trainable
    # weights stay in full precision, and mixed precision is accelerate's job
    dtype = getattr(torch, cfg.torch_dtype or "float32")
    try:
        if adapter:  # an exported PEFT adapter: its base model, then the adapter on top
            backbone = _adapter_backbone(transformer_dir, dtype)
        else:
            backbone = AutoModel.from_pretrained(str(transformer_dir), dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(transformer_dir))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelSourceError(
            f"could not load a transformers encoder and tokenizer from {transformer_dir}: {exc}",
            "check that the directory holds config.json, the weights and the tokenizer files",
        ) from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelSourceError(
                f"the tokenizer in {transformer_dir} has no padding or end-of-sequence token",
                "save the tokenizer with a pad_token",
            )
        tokenizer.pad_token = tokenizer.eos_token
    pooler = getattr(backbone, "pooler", None)
    if isinstance(pooler, nn.Module):
        # BERT-style poolers are not used by our pooling: frozen, they are not "unused
        # parameters" to DDP (whose buckets would otherwise never be reduced), and still exported
        pooler.requires_grad_(False)
    pooling = cfg.pooling or (layout.pooling if layout and layout.pooling else "mean")
    hidden = int(backbone.config.hidden_size)
    projection = _projection(cfg, layout, hidden)
    max_len = cfg.max_seq_length
    model = TextEncoder(
        backbone, tokenizer, pooling=pooling, projection=projection,
        normalize=cfg.normalize, max_seq_length=max_len, source=str(cfg.model_name),
    )
    if cfg.use_gradient_checkpointing:
        enable_gradient_checkpointing(model, cfg)
    return model


def _adapter_backbone(adapter_dir: Path, dtype: torch.dtype) -> nn.Module:
    """A PEFT LoRA adapter directory on its base model (adapter_config.json names the base: a
    local directory, or a hub id resolved like model_name), frozen for inference."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModel

    base_name = PeftConfig.from_pretrained(str(adapter_dir)).base_model_name_or_path
    if not base_name:
        raise ModelSourceError(f"{adapter_dir}/adapter_config.json names no base model",
                               "set base_model_name_or_path in it to the base model directory")
    base = AutoModel.from_pretrained(str(resolve_model_source(base_name, required_file=None)), dtype=dtype)
    return PeftModel.from_pretrained(base, str(adapter_dir))


def _projection(cfg: ModelConfig, layout: Any, hidden: int) -> nn.Linear | None:
    """A Dense head read from a sentence-transformers directory, or a new one of projection_dim."""
    if layout is not None and layout.dense is not None:
        from safetensors.torch import load_file

        dense = layout.dense
        if cfg.projection_dim not in (None, dense["out_features"]):
            raise ConfigError(
                f"model.projection_dim={cfg.projection_dim}, but {cfg.model_name} already has a "
                f"Dense head of {dense['out_features']}",
                "drop model.projection_dim, or point model_name at the transformer alone",
            )
        linear = nn.Linear(dense["in_features"], dense["out_features"], bias=dense.get("bias", True))
        weights = load_file(str(Path(dense["path"]) / "model.safetensors"))
        linear.load_state_dict({k.removeprefix("linear."): v for k, v in weights.items()})
        return linear
    if cfg.projection_dim is None:
        return None
    return nn.Linear(hidden, cfg.projection_dim)


def enable_gradient_checkpointing(model: TextEncoder, config: Any) -> None:
    cfg = config if isinstance(config, ModelConfig) else model_config(config)
    base = model.backbone.get_base_model() if hasattr(model.backbone, "get_base_model") else model.backbone
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ConfigError(
            f"{type(model.backbone).__name__} does not support gradient checkpointing",
            "set model.use_gradient_checkpointing=false",
        )
    kwargs = {"use_reentrant": False, **dict(cfg.gradient_checkpointing_kwargs)}
    backbone = model.backbone
    if hasattr(backbone, "activation_checkpointing_enable"):  # transformers >= 5
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if kwargs.get("use_reentrant"):
        # reentrant checkpointing needs inputs that require grad when embeddings are frozen (LoRA)
        model.backbone.enable_input_require_grads()


def build_teacher_model(config: Any) -> TextEncoder | None:
    """The distillation teacher (`teacher_model_name`, with `teacher_model_config` holding
    ModelConfig options for it), frozen and in eval mode; None when no teacher is named."""
    cfg = model_config(config)
    if not cfg.teacher_model_name:
        return None
    options = {**dict(cfg.teacher_model_config), "model_name": cfg.teacher_model_name}
    teacher_cfg = model_config(options, "model.teacher_model_config")
    if teacher_cfg.use_lora or teacher_cfg.teacher_model_name:
        raise ConfigError(
            "model.teacher_model_config may not set use_lora or teacher_model_name",
            "the teacher is frozen: remove those keys",
        )
    teacher = build_model(teacher_cfg)
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def lora_layer_names(module: nn.Module) -> set[str]:
    """The last name component of every layer LoRA can wrap (linear layers, and attention
    modules peft wraps as a whole, such as open_clip's nn.MultiheadAttention)."""
    return {name.rsplit(".", 1)[-1] for name, layer in module.named_modules()
            if isinstance(layer, nn.Linear | nn.MultiheadAttention)}


def lora_targets(module: nn.Module, cfg: ModelConfig, family: str | None = None) -> list[str]:
    """`cfg.lora_target_modules`, checked against `module`'s layers, or the targets of the
    module's family (`family`, else its config.model_type) that the module has."""
    names = lora_layer_names(module)
    if cfg.lora_target_modules:
        missing = [t for t in cfg.lora_target_modules if t not in names]
        if missing:
            raise ConfigError(
                f"model.lora_target_modules {missing} name no linear layer of the model "
                f"(its linear layers: {', '.join(sorted(names))})",
                "pick names from that list",
            )
        return list(cfg.lora_target_modules)
    family = family or getattr(getattr(module, "config", None), "model_type", "")
    candidates = LORA_TARGETS.get(family, VEMBED_DEFAULT_TARGETS)
    found = [t for t in candidates if t in names]
    if not found:
        raise ConfigError(
            f"no LoRA target modules found for model type {family!r} "
            f"(its linear layers: {', '.join(sorted(names))})",
            "set model.lora_target_modules=[NAME,...]",
        )
    return found


# a pooler is a head (unused by our text pooling, or trained whole in an image tower), not a
# LoRA target: adapters on an unused layer would be parameters DDP waits for in vain
NOT_LORA_TARGETS = r"(.*\.)?pooler(\..*)?"


def wrap_lora(module: nn.Module, cfg: ModelConfig, targets: list[str]) -> nn.Module:
    """`module` with peft LoRA adapters on `targets` (r, alpha, dropout from `cfg`), none in a
    pooler; everything else in it frozen."""
    import re

    from peft import LoraConfig, get_peft_model

    has_pooler = any(re.fullmatch(NOT_LORA_TARGETS, name) for name, _ in module.named_modules())
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none",
                      exclude_modules=NOT_LORA_TARGETS if has_pooler else None)
    return get_peft_model(module, lora)


def lora_on_backbone(model: Any, cfg: ModelConfig) -> list[str]:
    """The default LoRA of an encoder with one `backbone` (a transformers text encoder, CLIP):
    wrap the backbone, then the model's preset (`after_lora`) and gradient checkpointing."""
    targets = lora_targets(model.backbone, cfg)
    model.backbone = wrap_lora(model.backbone, cfg, targets)
    if hasattr(model, "after_lora"):  # the model family's preset (CLIP: projections trainable)
        model.after_lora()
    if cfg.use_gradient_checkpointing:
        enable_gradient_checkpointing(model, cfg)
    return targets


def apply_lora(model: Any, config: Any, accelerator: Any = None) -> Any:
    """Add peft LoRA adapters (r, alpha, dropout, targets from `config`), in place; pooling,
    projection heads and projections stay trainable. A model with its own `add_lora(cfg)`
    (open_clip, a tower pair) places them itself. Does nothing unless `use_lora`."""
    cfg = model_config(config)
    if not cfg.use_lora:
        return model
    add_lora = getattr(model, "add_lora", None)
    targets = add_lora(cfg) if add_lora is not None else lora_on_backbone(model, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    message = f"LoRA on {targets}: {trainable:,} trainable parameters of {total:,}"
    if accelerator is not None:
        accelerator.print(message)
    log.info(message)
    return model


def enable_static_graph(model: nn.Module, config: Any, accelerator: Any) -> None:
    """DDP static-graph optimisation for a prepared model, unless gradient checkpointing or
    find_unused_parameters rule it out (their graphs change between steps). No-op outside DDP."""
    cfg = model_config(config)
    if cfg.use_gradient_checkpointing or cfg.find_unused_parameters:
        return
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model._set_static_graph()
        if accelerator is not None:
            accelerator.print("DDP static graph enabled")


def compile_model(model: nn.Module, config: Any, accelerator: Any = None) -> nn.Module:
    """torch.compile(model, mode=compile_mode) when `compile` is set, else the model unchanged."""
    cfg = model_config(config)
    if not cfg.compile:
        return model
    if accelerator is not None:
        accelerator.print(f"torch.compile(mode={cfg.compile_mode!r})")
    return torch.compile(model, mode=cfg.compile_mode)
