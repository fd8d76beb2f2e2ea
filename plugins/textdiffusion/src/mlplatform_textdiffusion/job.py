"""The Hydra boundary: job=train trainer=text_diffusion and job=sample turn the composed config
into plain arguments once, then call the Python API (train.train, TextDiffusionPipeline)."""

from __future__ import annotations

import json
import logging
from typing import Any

from mlplatform.api import (
    ConfigError,
    atomic_write_json,
    atomic_write_text,
    get_registry,
    job_output_dir,
    to_schema,
)

from .schemas import SampleJobConfig, TextDiffusionTrainerConfig

log = logging.getLogger(__name__)

SAMPLE_MODES = ("sample", "reconstruct", "interpolate", "evaluate")


def run_trainer(cfg: Any) -> dict[str, Any]:
    from .train import train

    options: TextDiffusionTrainerConfig = to_schema(cfg.trainer, "trainer")
    result = train(options, job_output_dir(), device=cfg.device, dtype=cfg.dtype, seed=cfg.seed)
    final = result.metrics["final"]
    if result.metrics["random_weights_from_start"]:
        print("*** started from RANDOM WEIGHTS for: " + ", ".join(result.metrics["random_weights_from_start"]))
    print(f"trained text_diffusion ({options.mode}) for {options.steps} steps")
    print("  final: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in final.items()}))
    print(f"  model: {result.model_dir}")
    print(f"  metrics: {result.output_dir / 'metrics.json'}; loss curve: {result.output_dir / 'loss_curve.png'}")
    return result.metrics


def _check_sample_job(job: SampleJobConfig) -> None:
    if job.mode not in SAMPLE_MODES:
        raise ConfigError(f"unknown job.mode {job.mode!r}", f"pass one of {', '.join(SAMPLE_MODES)}")
    if job.mode == "sample" and job.num_samples < 1:
        raise ConfigError(f"job.num_samples must be >= 1, got {job.num_samples}", "pass job.num_samples=8")
    if job.mode == "reconstruct" and not job.sentences:
        raise ConfigError("mode=reconstruct needs sentences", "pass 'job.sentences=[\"a sentence\",\"another\"]'")
    if job.mode == "interpolate" and len(job.sentences) != 2:
        raise ConfigError(f"mode=interpolate needs exactly two sentences, got {len(job.sentences)}",
                          "pass 'job.sentences=[\"first sentence\",\"second sentence\"]'")
    if job.mode == "evaluate":
        if not job.corpus:
            raise ConfigError("mode=evaluate needs the training corpus", "pass job.corpus=PATH")
        if job.n_sets < 1:
            raise ConfigError(f"job.n_sets must be >= 1, got {job.n_sets}", "pass job.n_sets=3")
        if job.num_samples < 2:
            raise ConfigError(f"mode=evaluate needs job.num_samples >= 2, got {job.num_samples}",
                              "pass job.num_samples=32")
    if job.mode in ("sample", "evaluate"):
        get_registry().get("sampler", job.sampler)  # an unknown name fails before the model loads
    if job.too_long not in (None, "truncate", "refuse"):
        raise ConfigError(f"unknown job.too_long {job.too_long!r}", "pass truncate or refuse")


def run_sample_job(cfg: Any) -> dict[str, Any]:
    from safetensors.torch import save_file

    from .pipeline import Decoding, TextDiffusionPipeline

    job: SampleJobConfig = to_schema(cfg.job, "job")
    _check_sample_job(job)
    decoding = Decoding(job.decoding, job.top_k, job.top_p, job.temperature, job.max_new_tokens)
    decoding.check()
    pipe = TextDiffusionPipeline.from_pretrained(job.model, device=cfg.device, use_ema=job.use_ema,
                                                 too_long=job.too_long)
    if job.mode in ("sample", "evaluate") and pipe.artifact.options.mode == "vae":
        log.warning("%s was trained with trainer.mode=vae: its DDPM prior is untrained, so sampled "
                    "sentences are noise (train the prior with trainer.mode=ddpm trainer.init_from=...)", job.model)
    if job.mode == "evaluate":
        return _run_evaluate(job, pipe, decoding, cfg.seed)
    if job.mode == "sample":
        texts, z = pipe.sample(job.num_samples, sampler=job.sampler, steps=job.steps, eta=job.eta,
                               decoding=decoding, seed=cfg.seed)
    elif job.mode == "reconstruct":
        texts, z = pipe.reconstruct(list(job.sentences), decoding=decoding, seed=cfg.seed)
    else:
        texts, z = pipe.interpolate(job.sentences[0], job.sentences[1], job.interpolation_steps,
                                    decoding=decoding, seed=cfg.seed)
    out = job_output_dir()
    atomic_write_text(out / "sentences.txt", "".join(t + "\n" for t in texts))
    summary = {"mode": job.mode, "model": str(job.model), "sentences": texts, "used_ema": pipe.used_ema,
               "sampler": job.sampler if job.mode == "sample" else None, "steps": job.steps, "eta": job.eta,
               "decoding": job.decoding, "inputs": list(job.sentences)}
    if job.save_latents:
        save_file({"latents": z.detach().float().cpu().contiguous()}, str(out / "latents.safetensors"))
        summary["latents"] = str(out / "latents.safetensors")
    atomic_write_json(out / "samples.json", summary)
    for text in texts:
        print(text)
    print(f"saved {len(texts)} sentence(s) to {out / 'sentences.txt'}")
    return summary


def _run_evaluate(job: SampleJobConfig, pipe, decoding, seed: int) -> dict[str, Any]:
    from .data import load_corpus
    from .evaluate import evaluate

    corpus = load_corpus(job.corpus, job.corpus_format, job.text_key)
    result = evaluate(pipe, corpus, n_sets=job.n_sets, num_samples=job.num_samples, sampler=job.sampler,
                      steps=job.steps, eta=job.eta, decoding=decoding, seed=seed, judge_lm=job.judge_lm)
    result.update(model=str(job.model), corpus=str(job.corpus), used_ema=pipe.used_ema, decoding=job.decoding)
    out = job_output_dir()
    atomic_write_json(out / "eval_metrics.json", result)
    for name, stats in result["metrics"].items():
        print(f"{name}: {stats['mean']:.4f} +- {stats['std']:.4f}")
    for note in result.get("notes", []):
        print(f"note: {note}")
    print(f"saved metrics over {job.n_sets} set(s) of {job.num_samples} to {out / 'eval_metrics.json'}")
    return result
