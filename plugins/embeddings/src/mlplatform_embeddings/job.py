"""The Hydra boundary: `trainer=embedding` (through `job=train`) and the `embed` task turn the
composed config into plain arguments once, here, and call the Python API below."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from mlplatform.api import atomic_write_bytes, job_output_dir, resolve_device, to_schema

from .export import embed, read_texts_file
from .schemas import EmbeddingTrainerConfig, EmbedTaskConfig
from .training import train


def run_trainer(cfg: Any) -> dict[str, Any]:
    """trainer=embedding: train, evaluate and export as `cfg.trainer` says; returns the summary."""
    trainer: EmbeddingTrainerConfig = to_schema(cfg.trainer, "trainer")
    # accelerate logs every file of every checkpoint at INFO, which Hydra's logging shows
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    summary = train(dataclasses.asdict(trainer), seed=cfg.seed, device=cfg.device)
    if not summary["main_process"]:  # under accelerate launch / torchrun: rank 0 reports
        return summary
    for result in summary["evaluations"]:
        if result["label"] in ("before", "after"):
            print(f"{result['label']:>6}: nDCG@10={result['ndcg@10']:.4f} "
                  f"MRR@10={result['mrr@10']:.4f} R@1={result['recall@1']:.4f} "
                  f"R@10={result['recall@10']:.4f}")
    speed = summary["samples_per_second"]
    cuda = summary["peak_cuda_mb"]
    print(f"trained {summary['steps']} steps"
          + (f" at {speed:.1f} samples/s" if speed else "")
          + f"; peak RSS {summary['peak_rss_mb']:.0f} MB"
          + (f", peak CUDA {cuda:.0f} MB" if cuda else "")
          + f"; checkpoint {summary['checkpoint']}")
    if summary.get("model_dir"):
        print(f"exported model: {summary['model_dir']}")
    return summary


def run_embed_task(cfg: Any) -> dict[str, Any]:
    """The `embed` task: `run(cfg) -> result`.

    `cfg` is the composed config with a `task` node of schema EmbedTaskConfig (task=embed):
    `task.model_dir` (an exported model), `task.texts` or `task.texts_file`, `task.images` (an
    image-text model's image files, embedded after the texts), `task.batch_size`,
    `task.save`; `cfg.device` picks the device. Returns a JSON-friendly dict: {"embeddings": one
    list of floats per text, "dimension": int, "texts": [...], "model_dir": str, "path": the
    float32 embeddings.npy in the run dir, or None with task.save=false}.
    """
    task: EmbedTaskConfig = to_schema(cfg.task, "task")
    texts = list(task.texts) + (read_texts_file(task.texts_file) if task.texts_file else [])
    device = resolve_device(cfg.get("device", "cpu"))
    vectors = embed(task.model_dir, texts, batch_size=task.batch_size, device=device,
                    images=list(task.images))
    path = None
    if task.save:
        import io

        buffer = io.BytesIO()
        np.save(buffer, vectors)
        path = str(atomic_write_bytes(job_output_dir() / "embeddings.npy", buffer.getvalue()))
    print(f"embedded {len(texts)} texts and {len(task.images)} images -> {vectors.shape[1]} dimensions"
          + (f"; saved {path}" if path else ""))
    return {"embeddings": vectors.tolist(), "dimension": int(vectors.shape[1]), "texts": texts,
            "images": list(task.images), "model_dir": task.model_dir, "path": path}
