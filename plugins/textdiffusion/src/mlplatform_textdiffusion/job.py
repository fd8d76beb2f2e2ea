"""The Hydra boundary: job=train trainer=text_diffusion, job=sample and task=text_diffusion
(job=infer) turn the composed config into plain arguments once, then call the Python API
(train.train, TextDiffusionPipeline)."""

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

from .schemas import (
    SampleJobConfig,
    SamplingOptions,
    TextDiffusionTaskConfig,
    TextDiffusionTrainerConfig,
)

log = logging.getLogger(__name__)

SAMPLE_MODES = ("sample", "reconstruct", "interpolate", "evaluate")
TASK_MODES = ("sample", "reconstruct", "interpolate")


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


def _check_sampling(options: SamplingOptions, modes: tuple[str, ...], prefix: str) -> None:
    """The checks job=sample and task=text_diffusion share; `prefix` ("job" or "task") names
    the options in the messages."""
    if options.mode not in modes:
        hint = " (mode=evaluate is job=sample's)" if prefix == "task" and options.mode == "evaluate" else ""
        raise ConfigError(f"unknown {prefix}.mode {options.mode!r}{hint}", f"pass one of {', '.join(modes)}")
    if options.mode in ("sample", "evaluate") and options.num_samples < 1:
        raise ConfigError(f"{prefix}.num_samples must be >= 1, got {options.num_samples}",
                          f"pass {prefix}.num_samples=8")
    if options.mode == "reconstruct" and not options.sentences:
        raise ConfigError("mode=reconstruct needs sentences",
                          f"pass '{prefix}.sentences=[\"a sentence\",\"another\"]'")
    if options.mode == "interpolate" and len(options.sentences) != 2:
        raise ConfigError(f"mode=interpolate needs exactly two sentences, got {len(options.sentences)}",
                          f"pass '{prefix}.sentences=[\"first sentence\",\"second sentence\"]'")
    if options.mode in ("sample", "evaluate"):
        get_registry().get("sampler", options.sampler)  # an unknown name fails before the model loads
    if options.too_long not in (None, "truncate", "refuse"):
        raise ConfigError(f"unknown {prefix}.too_long {options.too_long!r}", "pass truncate or refuse")


def _check_evaluate(job: SampleJobConfig) -> None:
    if not job.corpus:
        raise ConfigError("mode=evaluate needs the training corpus", "pass job.corpus=PATH")
    if job.n_sets < 1:
        raise ConfigError(f"job.n_sets must be >= 1, got {job.n_sets}", "pass job.n_sets=3")
    if job.num_samples < 2:
        raise ConfigError(f"mode=evaluate needs job.num_samples >= 2, got {job.num_samples}",
                          "pass job.num_samples=32")


def _open_pipeline(options: SamplingOptions, cfg: Any):
    from .pipeline import Decoding, TextDiffusionPipeline

    decoding = Decoding(options.decoding, options.top_k, options.top_p, options.temperature,
                        options.max_new_tokens)
    decoding.check()
    pipe = TextDiffusionPipeline.from_pretrained(options.model, device=cfg.device, use_ema=options.use_ema,
                                                 too_long=options.too_long, dtype=cfg.dtype)
    if options.mode in ("sample", "evaluate") and pipe.artifact.options.mode == "vae":
        log.warning("%s was trained with trainer.mode=vae: its DDPM prior is untrained, so sampled "
                    "sentences are noise (train the prior with trainer.mode=ddpm trainer.init_from=...)",
                    options.model)
    return pipe, decoding


def run_sample_job(cfg: Any) -> dict[str, Any]:
    job: SampleJobConfig = to_schema(cfg.job, "job")
    _check_sampling(job, SAMPLE_MODES, "job")
    if job.mode == "evaluate":
        _check_evaluate(job)
    pipe, decoding = _open_pipeline(job, cfg)
    if job.mode == "evaluate":
        return _run_evaluate(job, pipe, decoding, cfg.seed)
    return _sample_and_save(job, pipe, decoding, cfg.seed)


def run_text_diffusion_task(cfg: Any) -> dict[str, Any]:
    """task=text_diffusion for job=infer: `run(cfg) -> summary` (a JSON-friendly dict with
    "sentences"); cfg.task holds TextDiffusionTaskConfig. Writes what job=sample writes."""
    task: TextDiffusionTaskConfig = to_schema(cfg.task, "task")
    _check_sampling(task, TASK_MODES, "task")
    pipe, decoding = _open_pipeline(task, cfg)
    return _sample_and_save(task, pipe, decoding, cfg.seed)


def _sample_and_save(options: SamplingOptions, pipe, decoding, seed: int) -> dict[str, Any]:
    from safetensors.torch import save_file

    if options.mode == "sample":
        texts, z = pipe.sample(options.num_samples, sampler=options.sampler, steps=options.steps,
                               eta=options.eta, decoding=decoding, seed=seed)
    elif options.mode == "reconstruct":
        texts, z = pipe.reconstruct(list(options.sentences), decoding=decoding, seed=seed)
    else:
        texts, z = pipe.interpolate(options.sentences[0], options.sentences[1], options.interpolation_steps,
                                    decoding=decoding, seed=seed)
    out = job_output_dir()
    atomic_write_text(out / "sentences.txt", "".join(t + "\n" for t in texts))
    summary = {"mode": options.mode, "model": str(options.model), "sentences": texts, "used_ema": pipe.used_ema,
               "sampler": options.sampler if options.mode == "sample" else None, "steps": options.steps,
               "eta": options.eta, "decoding": options.decoding, "inputs": list(options.sentences),
               "dtype": str(pipe.dtype).removeprefix("torch.")}
    if options.save_latents:
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
