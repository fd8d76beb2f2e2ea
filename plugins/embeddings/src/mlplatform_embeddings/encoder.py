"""TextEncoder: a transformers backbone, a pooling rule, an optional projection head and optional
L2 normalisation, with the tokenizer beside it. Reads sentence-transformers model directories
(modules.json, the pooling config, a Dense head, Normalize) as well as plain transformers ones."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlplatform.api import ConfigError, ModelSourceError, read_json_file

from .schemas import POOLING_MODES

ST_TRANSFORMER = "sentence_transformers.models.Transformer"
ST_POOLING = "sentence_transformers.models.Pooling"
ST_DENSE = "sentence_transformers.models.Dense"
ST_NORMALIZE = "sentence_transformers.models.Normalize"
IDENTITY = "torch.nn.modules.linear.Identity"


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token states (batch, length, dim) to one vector per row; padding is never read."""
    mask = attention_mask.to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "mean":
        summed = (hidden * mask.unsqueeze(-1)).sum(1)
        return summed / mask.sum(1, keepdim=True).clamp(min=1.0)
    if mode == "last_token":
        # the last non-padding position, for right or left padding alike
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        last = (attention_mask.long() * positions).argmax(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ConfigError(f"unknown pooling {mode!r}", f"use one of {', '.join(POOLING_MODES)}")


class TextEncoder(nn.Module):
    """texts -> embeddings. `forward(input_ids, attention_mask)` is what training differentiates;
    `encode(texts)` is inference."""

    family = "transformers"  # the registered model family that exports and reloads it

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: Any,
        *,
        pooling: str = "mean",
        projection: nn.Linear | None = None,
        normalize: bool = True,
        max_seq_length: int = 128,
        source: str = "",
    ):
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ConfigError(f"unknown pooling {pooling!r}", f"use one of {', '.join(POOLING_MODES)}")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.projection = projection
        self.normalize = normalize
        self.max_seq_length = max_seq_length
        self.source = source

    @property
    def embedding_dim(self) -> int:
        if self.projection is not None:
            return self.projection.out_features
        return int(self.backbone.config.hidden_size)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(
            self.tokenizer(
                list(texts), padding=True, truncation=True, max_length=self.max_seq_length,
                return_tensors="pt",
            )
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs: Any):
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **inputs)
        pooled = pool(out.last_hidden_state, attention_mask, self.pooling)
        if self.projection is not None:
            pooled = self.projection(pooled.to(self.projection.weight.dtype))
        if self.normalize:
            pooled = nn.functional.normalize(pooled.float(), dim=-1)
        return pooled

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64, device: Any = None) -> torch.Tensor:
        """Embeddings of `texts` as a float32 CPU tensor (eval mode for the call); the texts are
        encoded sorted by length, `batch_size` at a time, so little padding is computed."""
        from .batching import tokenize_chunks

        was_training = self.training
        self.eval()
        device = device or next(self.parameters()).device
        outputs = []
        try:
            for start in range(0, len(texts), 1024):  # bounded tokenised memory
                chunks = tokenize_chunks(self.tokenizer, list(texts[start:start + 1024]),
                                         self.max_seq_length, overhead=10**6, max_rows=batch_size)
                chunks = chunks.to(device)
                part = torch.cat([self(**chunk).float() for chunk in chunks.inputs])
                outputs.append(part[chunks.restore].cpu())
        finally:
            self.train(was_training)
        if not outputs:
            return torch.empty(0, self.embedding_dim)
        return torch.cat(outputs)


@dataclass
class SentenceTransformersLayout:
    """What a sentence-transformers directory says about its modules."""

    transformer_dir: Path
    pooling: str | None
    dense: dict[str, Any] | None  # config of a Dense head, and its directory under "path"
    normalize: bool
    max_seq_length: int | None


def read_sentence_transformers_dir(root: Path) -> SentenceTransformersLayout | None:
    """The layout of a sentence-transformers model directory, or None for a plain transformers one.

    Supported modules: Transformer, Pooling (cls / mean / last token), Dense with an identity
    activation, Normalize. Anything else is refused, since dropping it would change the model."""
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return None
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        if not isinstance(modules, list):
            raise ValueError("not a JSON list")
    except (OSError, ValueError) as exc:
        raise ModelSourceError(
            f"{modules_file} cannot be read as a sentence-transformers module list ({exc})",
            "fix or re-export the model directory",
        ) from exc
    layout = SentenceTransformersLayout(root, None, None, False, None)
    for module in modules:
        kind = str(module.get("type", ""))
        path = root / str(module.get("path", ""))
        short = kind.rsplit(".", 1)[-1]
        if short == "Transformer":
            layout.transformer_dir = path
            bert_config = path / "sentence_bert_config.json"
            if bert_config.is_file():
                layout.max_seq_length = read_json_file(bert_config, "sentence-transformers").get(
                    "max_seq_length"
                )
        elif short == "Pooling":
            layout.pooling = _pooling_from_config(read_json_file(path / "config.json", "pooling"), path)
        elif short == "Dense":
            dense = read_json_file(path / "config.json", "Dense")
            if dense.get("activation_function", IDENTITY) != IDENTITY:
                raise ModelSourceError(
                    f"{path}: a Dense module with activation {dense['activation_function']!r} "
                    "is not supported yet (only an identity activation)",
                    "train from the transformer alone (point model_name at it) and set "
                    "model.projection_dim",
                )
            layout.dense = {**dense, "path": str(path)}
        elif short == "Normalize":
            layout.normalize = True
        else:
            raise ModelSourceError(
                f"{root}: sentence-transformers module {kind!r} is not supported",
                "supported: Transformer, Pooling (cls/mean/last token), Dense (identity), Normalize",
            )
    return layout


def _pooling_from_config(config: dict[str, Any], path: Path) -> str:
    modes = [
        mode
        for key, mode in (
            ("pooling_mode_cls_token", "cls"),
            ("pooling_mode_mean_tokens", "mean"),
            ("pooling_mode_lasttoken", "last_token"),
        )
        if config.get(key)
    ]
    others = [
        key for key in ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                        "pooling_mode_weightedmean_tokens")
        if config.get(key)
    ]
    if "pooling_mode" in config and not modes:  # newer single-key form
        mode = {"cls": "cls", "mean": "mean", "lasttoken": "last_token"}.get(config["pooling_mode"])
        modes = [mode] if mode else []
        others = [] if mode else [config["pooling_mode"]]
    if len(modes) != 1 or others:
        raise ModelSourceError(
            f"{path}/config.json: pooling {modes + others} is not supported",
            "supported: exactly one of cls, mean or last-token pooling",
        )
    return modes[0]
