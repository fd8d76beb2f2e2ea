"""Build a VAE_DDPM from typed options through the registry, and save/load it as an artifact
(an exported model or a training checkpoint: same layout, a checkpoint adds its training state).

Layout: encoder/ and decoder/ (each a transformers config.json plus the tokenizer),
model.safetensors (the whole VAE_DDPM), ema.safetensors (the eps-model's EMA, when kept),
textdiffusion.json (the options it was built from), training_state.pt (checkpoints only),
manifest.json (the core's checksums).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mlplatform.api import (
    ArtifactError,
    ConfigError,
    from_options,
    get_registry,
    read_json_file,
    resolve_model_source,
    staged_directory,
    verify_artifact,
    write_manifest,
)

from .abstract import DDPM_Abs, VAE_Abs, VAE_DDPM_Abs
from .data import TextCodec
from .eps_models import build_eps_model
from .models import check_latent_sizes
from .schemas import TextDiffusionTrainerConfig

FORMAT = 1
META_NAME = "textdiffusion.json"
# options that say how long or where to train, not what the model is
RUN_KEYS = ("steps", "log_every", "checkpoint_every", "output_dir", "resume", "progress", "init_from")
VAE_ARCH_KEYS = ("vae_class", "encoder", "decoder", "latent_size", "posterior_logvar", "max_length")


def _connector(kind: str, cfg, latent_size: int, hf_config=None):
    factory = get_registry().get(kind, cfg.connector)
    if hf_config is not None:
        return factory(config=hf_config, latent_size=latent_size, pooling=cfg.pooling, injection=cfg.injection)
    if not cfg.source:
        raise ConfigError(
            f"the {kind} connector {cfg.connector} has no source",
            f"pass trainer.vae.{kind.split('_')[1]}.source=HUB_ID_OR_DIRECTORY",
        )
    return factory(cfg.source, latent_size=latent_size, random_weights=cfg.random_weights,
                   pooling=cfg.pooling, injection=cfg.injection)


def load_tokenizer(source: str | Path):
    from transformers import AutoTokenizer

    directory = resolve_model_source(source, required_file=None)
    try:
        return AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no usable tokenizer in {directory}: {exc}",
                          "save the model's tokenizer there (tokenizer.save_pretrained)") from exc


def build_model(options: TextDiffusionTrainerConfig, *, encoder_config=None, decoder_config=None) -> VAE_DDPM_Abs:
    """The VAE_DDPM the options describe (connectors from their sources, or from the given
    transformers configs with weights still to load)."""
    v, d = options.vae, options.diffusion
    if v.latent_size < 1:
        raise ConfigError(f"vae.latent_size must be >= 1, got {v.latent_size}", "pass e.g. vae.latent_size=32")
    if d.latent_dim is not None and d.latent_dim != v.latent_size:
        raise ConfigError(
            f"latent-size mismatch: the VAE's latent has {v.latent_size} dimensions, "
            f"diffusion.latent_dim is {d.latent_dim}",
            "use the same size for both, or leave diffusion.latent_dim unset (null) to follow the VAE",
        )
    encoder = _connector("vae_encoder", v.encoder, v.latent_size, encoder_config)
    decoder = _connector("vae_decoder", v.decoder, v.latent_size, decoder_config)
    registry = get_registry()
    vae = _model_class("vae", v.vae_class, VAE_Abs)(
        encoder, decoder, v.latent_size, kl_weight=v.kl_weight, free_bits=v.free_bits,
        posterior_logvar=v.posterior_logvar)
    eps_model = build_eps_model(registry.get("eps_model", d.eps_model), v.latent_size,
                                hidden_dim=d.hidden_dim, num_layers=d.num_layers, num_heads=d.num_heads)
    _check_eps_shape(eps_model, d.eps_model, v.latent_size)
    schedule = registry.get("noise_schedule", d.schedule)
    ddpm = _model_class("ddpm", d.ddpm_class, DDPM_Abs)(
        eps_model, (d.beta1, d.beta2), d.n_T, None, schedule, prediction=d.prediction, train_on=d.train_on)
    check_latent_sizes(v.latent_size, ddpm)
    return _model_class("vae_ddpm", options.vae_ddpm_class, VAE_DDPM_Abs)(vae, ddpm, d.ddpm_weight)


def _model_class(kind: str, name: str, base: type) -> type:
    """A registered model class (the defaults VAE, DDPM, VAE_DDPM, or a plugin's subclass)."""
    cls = get_registry().get(kind, name)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{kind} {name!r} is registered as {cls!r}, not a subclass of {base.__name__}",
                          f"register a subclass of mlplatform_textdiffusion.{base.__name__}")
    return cls


def _check_eps_shape(eps_model, name: str, latent: int) -> None:
    """An eps-model must map (batch, latent) to (batch, latent); a plugin's may not."""
    with torch.no_grad():
        out = eps_model(torch.zeros(2, latent), torch.zeros(2, dtype=torch.long))
    if tuple(out.shape) != (2, latent):
        raise ConfigError(
            f"latent-size mismatch: eps-model {name!r} maps latents of size {latent} to shape "
            f"{tuple(out.shape)[1:]}",
            "build the eps-model with the VAE's latent size",
        )


def make_codec(options: TextDiffusionTrainerConfig, encoder_tokenizer=None, decoder_tokenizer=None,
               too_long: str | None = None) -> TextCodec:
    v = options.vae
    enc = encoder_tokenizer or load_tokenizer(v.encoder.source)
    dec = decoder_tokenizer or load_tokenizer(v.decoder.source)
    return TextCodec(enc, dec, v.max_length, too_long or v.too_long)


def check_max_length(model: VAE_DDPM_Abs, max_length: int) -> None:
    """max_length must fit the encoder's and the decoder's position tables."""
    limits = {
        "encoder": model.model_vae.encoder.max_length,
        "decoder": model.model_vae.decoder.max_length,
    }
    needed = {"encoder": max_length + 2, "decoder": max_length + 2}
    for part, limit in limits.items():
        if limit is not None and needed[part] > limit:
            raise ConfigError(
                f"vae.max_length={max_length} needs {needed[part]} positions but the {part} has {limit}",
                f"pass vae.max_length={limit - 2} or less",
            )


def options_dict(options) -> dict[str, Any]:
    return dataclasses.asdict(options)


def differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        full = f"{prefix}{key}"
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += differences(x, y, full + ".")
        elif x != y:
            out.append(f"{full}: {y!r} there, {x!r} here")
    return out


@dataclass
class Artifact:
    directory: Path
    model: VAE_DDPM_Abs
    ema_eps_model: torch.nn.Module | None
    codec: TextCodec
    options: TextDiffusionTrainerConfig
    step: int
    manifest: dict
    training_state: dict | None


def save_artifact(directory: Path, model: VAE_DDPM_Abs, codec: TextCodec, options, *, step: int, kind: str,
                  ema_eps_model=None, training_state: dict | None = None, extra: dict | None = None) -> Path:
    from safetensors.torch import save_model

    vae = model.model_vae
    random = [p for p, c in (("encoder", options.vae.encoder), ("decoder", options.vae.decoder)) if c.random_weights]
    with staged_directory(directory) as tmp:
        for part, module, tokenizer in (("encoder", vae.encoder.backbone, codec.enc),
                                        ("decoder", vae.decoder.lm, codec.dec)):
            module.config.save_pretrained(tmp / part)
            tokenizer.save_pretrained(tmp / part)
        save_model(model, str(tmp / "model.safetensors"))
        if ema_eps_model is not None:
            save_model(ema_eps_model, str(tmp / "ema.safetensors"))
        meta = {"format": FORMAT, "kind": kind, "step": step, "options": options_dict(options),
                "random_weights_from_start": random, **(extra or {})}
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if training_state is not None:
            torch.save(training_state, tmp / "training_state.pt")
        write_manifest(tmp, {"what": f"mlplatform-textdiffusion {kind}", "step": step,
                             "random_weights_from_start": random})
    return directory


def load_artifact(directory: str | Path, *, too_long: str | None = None, device="cpu") -> Artifact:
    """Load an exported model or a checkpoint, checking its manifest first."""
    from safetensors.torch import load_model
    from transformers import AutoConfig

    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"model directory {directory} does not exist",
                          "pass the model/ or checkpoints/step_N directory a training run wrote")
    manifest = verify_artifact(directory)
    meta = read_json_file(directory / META_NAME, "text-diffusion metadata")
    if meta.get("format") != FORMAT or not isinstance(meta.get("options"), dict):
        raise ArtifactError(f"{directory} is not a text-diffusion model of format {FORMAT}",
                            "re-export it with this version of mlplatform-textdiffusion")
    options = from_options(TextDiffusionTrainerConfig, meta["options"], f"{directory}/{META_NAME}")
    model = build_model(options, encoder_config=AutoConfig.from_pretrained(directory / "encoder"),
                        decoder_config=AutoConfig.from_pretrained(directory / "decoder"))
    load_model(model, str(directory / "model.safetensors"))
    ema = None
    if (directory / "ema.safetensors").is_file():
        import copy

        ema = copy.deepcopy(model.ddpm.eps_model)
        load_model(ema, str(directory / "ema.safetensors"))
    codec = make_codec(options, load_tokenizer(directory / "encoder"), load_tokenizer(directory / "decoder"), too_long)
    state = None
    if (directory / "training_state.pt").is_file():
        state = torch.load(directory / "training_state.pt", weights_only=True)
    model.to(device)
    if ema is not None:
        ema.to(device)
    return Artifact(directory, model, ema, codec, options, int(meta.get("step", 0)), manifest, state)
