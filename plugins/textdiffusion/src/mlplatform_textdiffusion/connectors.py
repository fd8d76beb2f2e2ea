"""Connectors: transformer encoders that output a Gaussian posterior, and a GPT-2 decoder that
reads a latent, built on public transformers APIs only (inputs_embeds, Cache objects).

DMLP's 15 `MODEL_CLASS` names map to two classes: `LatentEncoder` (with the backbone family and
pooling the name implies) and `GPT2LatentDecoder` (with the latent injection the name implies).
They are registered as kinds `vae_encoder` and `vae_decoder`, as factories
`(source=None, *, config=None, latent_size, **options) -> module`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from mlplatform.api import ConfigError, ModelSourceError, resolve_model_source

log = logging.getLogger(__name__)

POOLINGS = ("cls", "mean", "cls_mean")
INJECTIONS = ("both", "embedding", "memory")


class LatentEncoder(nn.Module):
    """A transformer encoder pooled to one vector, projected to (mu, logvar)."""

    def __init__(self, backbone: nn.Module, latent_size: int, pooling: str = "cls"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown encoder pooling {pooling!r}", f"pass one of {', '.join(POOLINGS)}")
        self.backbone = backbone
        self.latent_size = latent_size
        self.pooling = pooling
        hidden = backbone.config.hidden_size if hasattr(backbone.config, "hidden_size") else backbone.config.d_model
        width = 2 * hidden if pooling == "cls_mean" else hidden
        self.to_posterior = nn.Linear(width, 2 * latent_size)

    @property
    def max_length(self) -> int | None:
        return getattr(self.backbone.config, "max_position_embeddings", None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask[..., None].to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "mean":
            pooled = mean
        else:
            pooled = torch.cat([hidden[:, 0], mean], dim=-1)
        mu, logvar = self.to_posterior(pooled).chunk(2, dim=-1)
        return mu, logvar


class GPT2LatentDecoder(nn.Module):
    """GPT-2 conditioned on a latent z: added to every token embedding ("embedding"), given as
    one extra key/value position in every layer ("memory", Optimus' design), or both."""

    def __init__(self, lm: nn.Module, latent_size: int, injection: str = "both"):
        super().__init__()
        if injection not in INJECTIONS:
            raise ConfigError(f"unknown latent injection {injection!r}", f"pass one of {', '.join(INJECTIONS)}")
        self.lm = lm
        self.latent_size = latent_size
        self.injection = injection
        cfg = lm.config
        self.n_layer, self.n_head, self.n_embd = cfg.n_layer, cfg.n_head, cfg.n_embd
        self.latent_embedding = nn.Linear(latent_size, cfg.n_embd) if injection != "memory" else None
        self.latent_memory = (
            nn.Linear(latent_size, 2 * cfg.n_layer * cfg.n_embd) if injection != "embedding" else None
        )

    @property
    def max_length(self) -> int:
        return int(self.lm.config.n_positions)

    @property
    def memory_length(self) -> int:
        return 1 if self.latent_memory is not None else 0

    def latent_cache(self, z: torch.Tensor):
        """A fresh DynamicCache holding the latent's key/value in every layer (or None)."""
        from transformers import DynamicCache

        if self.latent_memory is None:
            return None
        head = self.n_embd // self.n_head
        kv = self.latent_memory(z).view(z.shape[0], self.n_layer, 2, self.n_head, 1, head)
        cache = DynamicCache()
        for layer in range(self.n_layer):
            cache.update(kv[:, layer, 0], kv[:, layer, 1], layer)
        return cache

    def forward(self, input_ids, z, attention_mask=None, past_key_values=None, past_tokens: int = 0,
                last_only: bool = False):
        """Logits for `input_ids` given z; `past_key_values` (from an earlier call, holding
        `past_tokens` tokens after the latent memory) continues a sequence; last_only=True
        applies the LM head to the last position only (all decoding needs).
        Returns (logits, cache)."""
        batch, length = input_ids.shape
        embeds = self.lm.get_input_embeddings()(input_ids)
        z = z.to(embeds.dtype)  # a float32 latent (a sampler's) on bf16/fp16 weights
        if self.latent_embedding is not None:
            embeds = embeds + self.latent_embedding(z)[:, None, :].to(embeds.dtype)
        if past_key_values is None:
            past_key_values = self.latent_cache(z)
        if attention_mask is not None:  # padding: the latent memory position is always visible
            memory = torch.ones(batch, self.memory_length, dtype=attention_mask.dtype, device=input_ids.device)
            attention_mask = torch.cat([memory, attention_mask], dim=1)
        # without padding (decoding) no mask is passed: the causal mask over the cache, memory
        # included, is the model's own, and building a full one per token costs more than the layers
        positions = torch.arange(past_tokens, past_tokens + length, device=input_ids.device)
        out = self.lm(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            position_ids=positions[None].expand(batch, length),
            use_cache=True,
            logits_to_keep=1 if last_only else 0,
        )
        return out.logits, out.past_key_values

    def reconstruction_loss(self, labels, z, labels_mask=None) -> torch.Tensor:
        """Summed next-token negative log-likelihood of each sentence (labels = bos w... eos)."""
        if labels_mask is None:
            labels_mask = torch.ones_like(labels)
        logits, _ = self.forward(labels[:, :-1], z, labels_mask[:, :-1])
        nll = nn.functional.cross_entropy(
            logits.float().transpose(1, 2), labels[:, 1:], reduction="none"
        )
        return (nll * labels_mask[:, 1:].to(nll.dtype)).sum(-1)

    @torch.inference_mode()
    def generate(self, z, bos_id: int, eos_id: int, max_new_tokens: int, *, strategy: str = "greedy",
                 top_k: int = 0, top_p: float = 1.0, temperature: float = 1.0,
                 generator: torch.Generator | None = None, use_cache: bool = True,
                 return_logits: bool = False):
        """Token ids (without bos/eos) for each latent; with use_cache=False every step
        recomputes the whole prefix (the reference the KV-cached path must equal).

        A row that has emitted eos leaves the batch (and the KV cache): later steps run on the
        live rows only, so a batch costs what its sentences need, not max length x batch size.
        Returns (list of token lists, step logits or None): with return_logits=True a float
        tensor (batch, steps, vocab) whose entries after a row's eos are NaN (never computed)."""
        if max_new_tokens + 1 > self.max_length:
            raise ConfigError(
                f"max_new_tokens={max_new_tokens} exceeds the decoder's {self.max_length} positions",
                f"pass at most {self.max_length - 1}",
            )
        batch = z.shape[0]
        # a finished row's later positions hold eos, as if it had kept emitting it
        tokens = torch.full((batch, max_new_tokens + 1), eos_id, dtype=torch.long, device=z.device)
        tokens[:, 0] = bos_id
        live = torch.arange(batch, device=z.device)  # rows still decoding, in batch order
        live_z, cache, steps_run, step_logits = z, None, 0, None
        for step in range(max_new_tokens):
            if use_cache:
                logits, cache = self.forward(tokens[live, step:step + 1], live_z, past_key_values=cache,
                                             past_tokens=step)
            else:
                logits, _ = self.forward(tokens[live, :step + 1], live_z, last_only=True)
            last = logits[:, -1].float()  # a no-op in float32
            if return_logits:
                if step_logits is None:
                    step_logits = last.new_full((batch, max_new_tokens, last.shape[-1]), float("nan"))
                step_logits[live, step] = last
            chosen = pick_next_token(last, strategy, top_k, top_p, temperature, generator)
            tokens[live, step + 1] = chosen
            steps_run = step + 1
            finished = chosen == eos_id
            if bool(finished.any()):
                keep = (~finished).nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                live, live_z = live[keep], live_z[keep]
                if cache is not None:
                    cache.batch_select_indices(keep)
        out = []
        for row in tokens[:, 1:steps_run + 1].tolist():
            out.append(row[: row.index(eos_id)] if eos_id in row else row)
        return out, (step_logits[:, :steps_run] if step_logits is not None else None)


DECODING = ("greedy", "top_k", "top_p")


def pick_next_token(logits, strategy: str, top_k: int, top_p: float, temperature: float, generator):
    if strategy == "greedy":
        return logits.argmax(-1)
    if strategy not in DECODING:
        raise ConfigError(f"unknown decoding strategy {strategy!r}", f"pass one of {', '.join(DECODING)}")
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}", "pass e.g. temperature=1.0")
    logits = logits / temperature
    if strategy == "top_k":
        if top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {top_k}", "pass e.g. top_k=20")
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    else:
        if not 0 < top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {top_p}", "pass e.g. top_p=0.9")
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        remove = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# --- DMLP's MODEL_CLASS names -------------------------------------------------------------


@dataclass(frozen=True)
class ConnectorSpec:
    role: str  # "encoder" or "decoder"
    model_types: tuple[str, ...]  # transformers model_type values the backbone may have
    pooling: str = "cls"  # encoders
    injection: str = "both"  # decoders
    description: str = ""


CONNECTORS: dict[str, ConnectorSpec] = {
    "BertForLatentConnector": ConnectorSpec("encoder", ("bert",), "cls", description="BERT, [CLS] pooled"),
    "BertForLatentConnectorAVG": ConnectorSpec("encoder", ("bert",), "mean", description="BERT, mean pooled"),
    "BertForLatentConnectorNew": ConnectorSpec("encoder", ("bert",), "cls_mean", description="BERT, [CLS] and mean"),
    "RobertaForLatentConnector": ConnectorSpec("encoder", ("roberta",), "cls", description="RoBERTa, <s> pooled"),
    "RobertaForLatentConnectorNew": ConnectorSpec("encoder", ("roberta",), "cls_mean", description="RoBERTa, <s> and mean"),
    "DebertaForLatentConnector": ConnectorSpec("encoder", ("deberta", "deberta-v2"), "cls", description="DeBERTa (v1/v2), [CLS] pooled"),
    "DebertaForLatentConnectorNew": ConnectorSpec("encoder", ("deberta", "deberta-v2"), "cls_mean", description="DeBERTa, [CLS] and mean"),
    "T5EncoderForLatentConnector": ConnectorSpec("encoder", ("t5",), "mean", description="T5 encoder, mean pooled"),
    "AlbertForLatentConnector": ConnectorSpec("encoder", ("albert",), "cls", description="ALBERT, [CLS] pooled"),
    "GPT2ForLatentConnector": ConnectorSpec("decoder", ("gpt2",), injection="both", description="GPT-2, latent as embedding and memory"),
    "GPT2ModelForVAE": ConnectorSpec("decoder", ("gpt2",), injection="both", description="GPT-2, latent as embedding and memory"),
    "GPT2ForLatentConnectorNew": ConnectorSpec("decoder", ("gpt2",), injection="memory", description="GPT-2, latent as memory only"),
    "GPT2ModelForVAENew": ConnectorSpec("decoder", ("gpt2",), injection="memory", description="GPT-2, latent as memory only"),
    "GPT2ForLatentConnectorNew2": ConnectorSpec("decoder", ("gpt2",), injection="embedding", description="GPT-2, latent as embedding only"),
    "GPT2ModelForVAENew2": ConnectorSpec("decoder", ("gpt2",), injection="embedding", description="GPT-2, latent as embedding only"),
}


def _load_backbone(spec: ConnectorSpec, name: str, source, config, random_weights: bool):
    """The transformers model for a connector: from a config object (random weights), or from a
    hub id / local directory through the core's model-source policy."""
    import transformers

    if config is None:
        if source is None:
            raise ConfigError(f"connector {name} needs a model source", "pass source=HUB_ID_OR_DIRECTORY")
        directory = resolve_model_source(source)
        config = transformers.AutoConfig.from_pretrained(directory)
    else:
        directory = None
    if config.model_type not in spec.model_types:
        raise ConfigError(
            f"connector {name} expects a {' or '.join(spec.model_types)} model, but {source or 'the config'} "
            f"is {config.model_type!r}",
            "pick the connector of that model family (python -m mlplatform job=plugins lists them)",
        )
    if spec.role == "decoder":
        cls = transformers.GPT2LMHeadModel
    elif config.model_type == "t5":
        cls = transformers.T5EncoderModel
    else:
        cls = transformers.AutoModel
    if directory is None or random_weights:
        if random_weights:
            log.warning("connector %s: RANDOM WEIGHTS (built from %s's config only)", name, source)
        return cls.from_config(config) if cls is transformers.AutoModel else cls(config)
    try:
        return cls.from_pretrained(directory)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"could not load {name} weights from {directory}: {exc}",
                               "point source at a directory saved with save_pretrained") from exc


def make_connector(name: str):
    """The registered factory of one MODEL_CLASS name."""
    spec = CONNECTORS[name]

    def build(source=None, *, latent_size: int, config=None, random_weights: bool = False,
              pooling: str | None = None, injection: str | None = None):
        backbone = _load_backbone(spec, name, source, config, random_weights)
        if spec.role == "encoder":
            return LatentEncoder(backbone, latent_size, pooling or spec.pooling)
        return GPT2LatentDecoder(backbone, latent_size, injection or spec.injection)

    build.__name__ = name
    build.__doc__ = spec.description
    build.role = spec.role
    return build
