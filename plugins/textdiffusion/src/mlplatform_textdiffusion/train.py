"""Training on HF accelerate: VAE only, DDPM on frozen latents, or joint; EMA of the
eps-model; checkpoints that resume exactly; metrics JSON and a loss-curve PNG.

`train(options, output_dir, device=, dtype=, seed=)` is the Python API; `job.py` calls it with
the options of trainer=text_diffusion.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mlplatform.api import (
    ConfigError,
    atomic_write_json,
    from_options,
    resolve_device,
    resolve_dtype,
)

from .build import (
    RUN_KEYS,
    VAE_ARCH_KEYS,
    build_model,
    check_max_length,
    differences,
    load_artifact,
    make_codec,
    options_dict,
    save_artifact,
)
from .data import load_corpus
from .schemas import TextDiffusionTrainerConfig

log = logging.getLogger(__name__)

MODES = ("vae", "ddpm", "joint")
EVAL_SENTENCES = 64


class EMA:
    """Exponential moving average of a module's parameters (with the usual warm-up)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(module).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_p, p in zip(self.model.parameters(), module.parameters(), strict=True):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1 - decay)


class LossWindow:
    """Sums of the logged losses over the steps since the last record."""

    def __init__(self, sums: dict[str, float] | None = None, count: int = 0):
        self.sums = dict(sums or {})
        self.count = count

    def add(self, **values: float) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def means(self, reset: bool) -> dict[str, float]:
        out = {key: total / self.count for key, total in self.sums.items()}
        if reset:
            self.sums, self.count = {}, 0
        return out

    def state(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count}


@dataclass
class TrainResult:
    output_dir: Path
    model_dir: Path
    checkpoint_dir: Path
    metrics: dict[str, Any]


def _check(options: TextDiffusionTrainerConfig) -> None:
    if options.mode not in MODES:
        raise ConfigError(f"unknown trainer.mode {options.mode!r}", f"pass one of {', '.join(MODES)}")
    for key in ("steps", "batch_size", "log_every"):
        if getattr(options, key) < 1:
            raise ConfigError(f"trainer.{key} must be >= 1, got {getattr(options, key)}", f"pass trainer.{key}=1 or more")
    if options.checkpoint_every < 0:
        raise ConfigError("trainer.checkpoint_every must be >= 0", "pass 0 (only the last step) or a step count")
    if options.lr <= 0:
        raise ConfigError(f"trainer.lr must be > 0, got {options.lr}", "pass e.g. trainer.lr=0.0001")
    if not 0 <= options.diffusion.ema_decay < 1:
        raise ConfigError("trainer.diffusion.ema_decay must be in [0, 1)", "pass e.g. 0.999, or 0 for no EMA")
    if options.mode == "ddpm" and not options.init_from and not options.resume:
        raise ConfigError("trainer.mode=ddpm trains the prior on a trained VAE's frozen latents, but no VAE was given",
                          "pass trainer.init_from=DIR (a model or checkpoint from a vae or joint run)")


def _vae_arch(options) -> dict:
    vae = options_dict(options)["vae"]
    return {k: vae[k] for k in VAE_ARCH_KEYS}


def _resolve_options(options: TextDiffusionTrainerConfig):
    """In ddpm mode the VAE comes from init_from: its VAE options replace ours."""
    start = None
    if options.init_from:
        start = load_artifact(options.init_from)
        if options.mode == "ddpm":
            mine = options.diffusion.latent_dim
            theirs = start.options.vae.latent_size
            if mine is not None and mine != theirs:
                raise ConfigError(
                    f"latent-size mismatch: the VAE in {options.init_from} has {theirs} latent "
                    f"dimensions, trainer.diffusion.latent_dim is {mine}",
                    f"pass trainer.diffusion.latent_dim={theirs} or leave it unset (null)",
                )
            options.vae = copy.deepcopy(start.options.vae)
        else:
            diff = differences(_vae_arch(start.options), _vae_arch(options))
            if diff:
                raise ConfigError(
                    f"init_from {options.init_from} holds a VAE of another configuration: " + "; ".join(diff),
                    "pass the same trainer.vae options as that run, or train from scratch",
                )
    return options, start


def _signature(options) -> dict:
    return {k: v for k, v in options_dict(options).items() if k not in RUN_KEYS}


def _batch_indices(seed: int, step: int, process: int, n: int, batch_size: int) -> torch.Tensor:
    """The sentences of one step: a function of (seed, step, process) only, so a resumed run
    sees exactly the batches an uninterrupted one would."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) * 1009 + process)
    return torch.randint(n, (batch_size,), generator=g)


@torch.no_grad()
def reconstruction_accuracy(model, codec, sentences: list[str], device) -> float:
    """Teacher-forced next-token accuracy of the decoder from each sentence's posterior mean."""
    vae = model.model_vae
    was_training = vae.training
    vae.eval()
    inputs, inputs_mask = codec.encoder_batch(sentences, device)
    labels, labels_mask = codec.decoder_batch(sentences, device)
    mu, _ = vae.encode(inputs, inputs_mask)
    logits, _ = vae.decoder(labels[:, :-1], mu, labels_mask[:, :-1])
    target_mask = labels_mask[:, 1:].bool()
    correct = (logits.argmax(-1) == labels[:, 1:]) & target_mask
    vae.train(was_training)
    return float(correct.sum() / target_mask.sum())


@torch.no_grad()
def reconstruction_bleu(model, codec, sentences: list[str], device) -> float:
    """sacrebleu corpus BLEU of greedy decodes from each sentence's posterior mean (DMLP's
    reconstruction BLEU), with the sentences themselves as references."""
    import sacrebleu

    vae = model.model_vae
    was_training = vae.training
    vae.eval()
    ids, mask = codec.encoder_batch(sentences, device)
    mu, _ = vae.encode(ids, mask)
    limit = min(codec.max_length + 1, vae.decoder.max_length - 1)
    tokens, _ = vae.decoder.generate(mu, codec.bos_id, codec.eos_id, limit)
    vae.train(was_training)
    hypotheses = [codec.decode(row) for row in tokens]
    return float(sacrebleu.corpus_bleu(hypotheses, [sentences]).score)


def _mixed_precision(dtype: torch.dtype) -> str:
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "no")


def train(options: Any, output_dir: str | Path, *, device: str = "auto", dtype: str = "float32",
          seed: int = 0) -> TrainResult:
    """Train per `options` (a TextDiffusionTrainerConfig or a dict of its fields); writes
    checkpoints/, model/ (exported, with manifest), metrics.json and loss_curve.png under
    output_dir."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    if not isinstance(options, TextDiffusionTrainerConfig):
        options = from_options(TextDiffusionTrainerConfig, options, "trainer")
    _check(options)
    out = Path(options.output_dir or output_dir)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    accelerator = Accelerator(cpu=torch_device.type == "cpu", mixed_precision=_mixed_precision(torch_dtype))
    torch.manual_seed(seed)

    sentences = load_corpus(options.corpus, options.corpus_format, options.text_key)
    options, start = _resolve_options(options)
    resumed = load_artifact(options.resume) if options.resume else None
    if resumed is not None:
        if resumed.training_state is None:
            raise ConfigError(f"{options.resume} is an exported model, not a checkpoint",
                              "pass a checkpoints/step_N directory to trainer.resume")
        diff = differences(_signature(resumed.options), _signature(options))
        if diff:
            raise ConfigError(
                f"checkpoint {options.resume} was written by another configuration: " + "; ".join(diff),
                "resume with the options of the run that wrote it (only steps, log_every, "
                "checkpoint_every, output_dir and progress may change)",
            )
        model, codec = resumed.model, resumed.codec
    else:
        model = build_model(options)
        codec = make_codec(options) if start is None else make_codec(options, start.codec.enc, start.codec.dec)
        if start is not None:
            model.model_vae.load_state_dict(start.model.model_vae.state_dict())
            same_prior = not differences(options_dict(start.options)["diffusion"], options_dict(options)["diffusion"])
            if same_prior:
                model.ddpm.load_state_dict(start.model.ddpm.state_dict())
            log.info("initialised the VAE%s from %s", " and the DDPM" if same_prior else "", options.init_from)
    check_max_length(model, options.vae.max_length)
    codec.check_lengths(sentences)

    if options.mode == "ddpm":
        model.model_vae.requires_grad_(False)
        params = list(model.ddpm.parameters())
    elif options.mode == "vae":
        model.ddpm.requires_grad_(False)
        params = list(model.model_vae.parameters())
    else:
        params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    ema = EMA(model.ddpm.eps_model, options.diffusion.ema_decay) if options.diffusion.ema_decay > 0 else None
    first_step, history = 0, []
    window = LossWindow()
    if resumed is not None:
        state = resumed.training_state
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        first_step, history = int(state["step"]), list(state["history"])
        window = LossWindow(**state.get("loss_window", {}))
        if ema is not None and resumed.ema_eps_model is not None:
            ema.model.load_state_dict(resumed.ema_eps_model.state_dict())
            ema.updates = int(state["ema_updates"])
        if first_step >= options.steps:
            raise ConfigError(f"checkpoint {options.resume} is already at step {first_step} of {options.steps}",
                              f"pass trainer.steps greater than {first_step}")

    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)
    if options.mode == "ddpm":
        core.model_vae.eval()
    eval_sentences = sentences[:EVAL_SENTENCES]
    checkpoints = out / "checkpoints"
    vocab = len(codec.dec)

    def checkpoint(step: int) -> Path:
        state = {"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "step": step,
                 "history": history, "ema_updates": ema.updates if ema else 0, "loss_window": window.state()}
        return save_artifact(checkpoints / f"step_{step:07d}", core, codec, options, step=step,
                             kind="checkpoint", ema_eps_model=ema.model if ema else None, training_state=state)

    bar = tqdm(range(first_step, options.steps), disable=not options.progress or not accelerator.is_main_process,
               desc=f"text_diffusion ({options.mode})", initial=first_step, total=options.steps)
    for step in bar:
        anneal = options.vae.kl_anneal_steps
        core.model_vae.kl_weight = options.vae.kl_weight * (min(1.0, step / anneal) if anneal > 0 else 1.0)
        idx = _batch_indices(seed, step, accelerator.process_index, len(sentences), options.batch_size)
        batch = [sentences[i] for i in idx.tolist()]
        inputs, inputs_mask = codec.encoder_batch(batch, accelerator.device)
        labels, labels_mask = codec.decoder_batch(batch, accelerator.device)
        with accelerator.autocast():
            loss_rec, loss_kl, total, _, _, ddpm_loss, _ = model(inputs, labels, inputs_mask, labels_mask, mode=options.mode)
        accelerator.backward(total)
        if options.grad_clip > 0:
            accelerator.clip_grad_norm_(params, options.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(core.ddpm.eps_model)
        done = step + 1
        window.add(loss=float(total.detach()),
                   rec_per_token=float(loss_rec.detach().sum()) / float(labels_mask[:, 1:].sum()),
                   kl=float(loss_kl.detach().mean()), ddpm_loss=float(ddpm_loss.detach().mean()))
        if done % options.log_every == 0 or done == options.steps:
            # the losses are means over the steps since the last record (one batch is too noisy
            # to show a trend); a run's last record keeps its window for a resumed run to go on
            record = {
                "step": done,
                **window.means(reset=done % options.log_every == 0),
                "kl_weight": core.model_vae.kl_weight,
                "rec_token_accuracy": reconstruction_accuracy(core, codec, eval_sentences, accelerator.device),
            }
            history.append(record)
            bar.set_postfix(rec=f"{record['rec_per_token']:.3f}", ddpm=f"{record['ddpm_loss']:.3f}",
                            acc=f"{record['rec_token_accuracy']:.2f}")
            log.info("step %d: %s", done, json.dumps(record))
        if accelerator.is_main_process and (
            (options.checkpoint_every and done % options.checkpoint_every == 0) or done == options.steps
        ):
            checkpoint(done)

    accelerator.wait_for_everyone()
    final = dict(history[-1]) if history else {}
    final["reconstruction_bleu"] = reconstruction_bleu(core, codec, eval_sentences, accelerator.device)
    metrics = {
        "mode": options.mode,
        "steps": options.steps,
        "resumed_from_step": first_step if resumed is not None else None,
        "sentences": len(sentences),
        "decoder_vocab": vocab,
        "chance_token_accuracy": 1.0 / vocab,
        "final": final,
        "evaluated_on": f"the first {len(eval_sentences)} corpus sentences",
        "history": history,
        "random_weights_from_start": [p for p, c in (("encoder", options.vae.encoder),
                                                     ("decoder", options.vae.decoder)) if c.random_weights],
    }
    model_dir = out / "model"
    if accelerator.is_main_process:
        save_artifact(model_dir, core, codec, options, step=options.steps, kind="model",
                      ema_eps_model=ema.model if ema else None, extra={"metrics": final})
        atomic_write_json(out / "metrics.json", metrics)
        plot_losses(history, out / "loss_curve.png")
    return TrainResult(out, model_dir, checkpoints, metrics)


def plot_losses(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    steps = [h["step"] for h in history]
    for ax, key, title in zip(axes, ("rec_per_token", "ddpm_loss", "rec_token_accuracy"),
                              ("reconstruction NLL / token", "DDPM loss", "reconstruction token accuracy"), strict=True):
        values = [h[key] if math.isfinite(h[key]) else float("nan") for h in history]
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
