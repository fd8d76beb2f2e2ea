"""The contrastive training loop on Hugging Face accelerate.

`train(config)` reads pairs, builds the model (model_builder), wraps encoder + loss in one module
so every loss parameter (a learnable temperature) is trained, synchronised and checkpointed with
the model, and runs AdamW with a warmup schedule under `Accelerator` (mixed precision, gradient
accumulation, clipping; `accelerate launch` runs it on several processes). Checkpoints hold
model, optimizer and RNG states (accelerator.save_state) and a manifest with the sha256 of each
file, the scheduler state and the data position, so a resumed run ends with the same weights as
an uninterrupted one; resuming verifies the manifest before anything is unpickled.

The model comes from the registered model family (families.py) and the loss from the
registered loss factory, so a plugin's family or loss trains exactly like a built-in one."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import resource
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlplatform.api import (
    MANIFEST_NAME,
    ArtifactError,
    ConfigError,
    atomic_write_json,
    from_options,
    job_output_dir,
    require_keys,
    resolve_device,
    verify_artifact,
    write_manifest,
)

from .batching import MAX_CHUNK_ROWS, Chunks, overhead_tokens, tokenize_chunks
from .clip import ImageTextBase, evaluate_zero_shot, is_images
from .data import Pair, load_splits
from .encoder import TextEncoder
from .export import export_model
from .gradcache import grad_cache_backward
from .losses import build_loss, distillation_loss, loss_temperature
from .metrics import evaluate_pairs
from .model_builder import (
    apply_lora,
    build_model,
    build_teacher_model,
    compile_model,
    enable_static_graph,
    model_config,
)
from .optim import build_optimizer, build_scheduler
from .schemas import MIXED_PRECISION, EmbeddingTrainerConfig

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "embedding-checkpoint"


class ContrastiveModel(nn.Module):
    """Encoder + loss as one module: forward(batch) -> loss. Wrapping both lets DDP synchronise
    and accelerate checkpoint the loss's parameters along with the encoder's."""

    def __init__(
        self, encoder: TextEncoder, loss: nn.Module, distillation: dict | None = None,
        cross_device_negatives: bool = False,
    ):
        super().__init__()
        self.encoder = encoder
        self.loss = loss
        self.distillation = distillation  # {"kind", "weight", "temperature"} with a teacher
        self.cross_device_negatives = cross_device_negatives

    def embed(self, texts: Chunks) -> torch.Tensor:
        """Embeddings of every text of the batch (queries, then documents), chunk by chunk."""
        return torch.cat([self.encoder(**chunk) for chunk in texts.inputs])[texts.restore]

    def contrastive_loss(
        self, embeddings: torch.Tensor, rows: int, query_ids, doc_ids,
        teacher_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss from the batch's embeddings: queries are the first `rows`, then the
        positives, then the hard negatives; `teacher_embeddings` (the teacher's, in the same
        order) give the distillation targets. With cross-device negatives every process
        computes the same loss over all processes' rows, distillation included. GradCache
        calls this on cached embeddings."""
        q, positive, negatives = embeddings[:rows], embeddings[rows:2 * rows], embeddings[2 * rows:]
        teacher = None
        if teacher_embeddings is not None and self.distillation:
            t = teacher_embeddings
            teacher = (t[:rows], t[rows:2 * rows], t[2 * rows:])
        if self.cross_device_negatives and gathering():
            q, positive, negatives = gather(q), gather(positive), gather(negatives)
            query_ids = gather(query_ids)
            doc_ids = torch.cat([gather(doc_ids[:rows]), gather(doc_ids[rows:])])
            teacher = None if teacher is None else tuple(gather(part) for part in teacher)
            rows = q.shape[0]
        value = self.loss(
            q, positive, negatives if negatives.shape[0] else None,
            query_ids=query_ids, doc_ids=doc_ids[:rows], negative_ids=doc_ids[rows:],
        )
        if teacher is None:
            return value
        tq, t_positive, t_negatives = teacher
        scores = tq.float() @ torch.cat([t_positive, t_negatives]).float().T
        student = q.float() @ torch.cat([positive, negatives]).float().T
        return value + self.distillation["weight"] * distillation_loss(
            student, scores, self.distillation["kind"], self.distillation["temperature"])

    def forward(
        self, texts: Chunks | None = None, rows: int = 0, query_ids=None, doc_ids=None,
        teacher_embeddings: torch.Tensor | None = None, *, chunk: dict | None = None,
    ) -> torch.Tensor:
        """The batch's loss; or, with `chunk=` (GradCache), one chunk's embeddings."""
        if chunk is not None:
            return self.encoder(**chunk)
        return self.contrastive_loss(self.embed(texts), rows, query_ids, doc_ids, teacher_embeddings)


def gathering() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and (
        torch.distributed.get_world_size() > 1
    )


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """All processes' rows in rank order; this process's rows keep their autograd history.

    Every process computes the same global loss; backward gives each its exact gradient through
    its own rows, with no collective inside backward (which could interleave with DDP's). DDP
    then averages over the P processes, so the local rows' gradient is multiplied by P here (the
    value is unchanged): encoder gradients equal one process with the whole global batch, and
    the loss's own parameters (the temperature), computed identically everywhere, need nothing.
    Tested with 2 processes against the single-process full batch."""
    world = torch.distributed.get_world_size()
    parts = [torch.empty_like(tensor) for _ in range(world)]
    torch.distributed.all_gather(parts, tensor.detach().contiguous())
    if tensor.is_floating_point():
        tensor = tensor + (world - 1) * (tensor - tensor.detach())  # same value, gradient x P
    parts[torch.distributed.get_rank()] = tensor
    return torch.cat(parts)


@torch.no_grad()
def teacher_embeddings(teacher: Any, batch: dict[str, Any], device: Any) -> torch.Tensor:
    """The teacher's L2-normalised embeddings of a batch's queries, then its documents (its own
    tokenizer and image processing: the documents of an image-text batch are images); their
    dot products are the distillation targets."""
    queries, documents = batch["query_texts"], batch["document_texts"]
    q = teacher.encode(queries, batch_size=len(queries), device=device)
    d = teacher.encode(documents, batch_size=len(documents), device=device)
    return nn.functional.normalize(torch.cat([q, d]).float(), dim=-1).to(device)


class EpochSampler(torch.utils.data.Sampler):
    """A seeded permutation per epoch, cut to a whole number of optimizer steps on every process,
    so the data position is (epoch, batches consumed) and replays exactly on resume."""

    def __init__(self, size: int, usable: int, seed: int):
        self.size, self.usable, self.seed, self.epoch = size, usable, seed, 0

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator)[: self.usable].tolist())

    def __len__(self) -> int:
        return self.usable


def text_id(text: str) -> int:
    """A 63-bit id of a text, equal for equal texts in every process (duplicate masking works
    across processes when negatives are gathered)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") >> 1


class PairCollator:
    """Tokenises a batch of pairs: queries, then positives, then all hard negatives, as
    length-bucketed chunks (batching.py), with integer ids saying which texts are equal (for
    duplicate masking)."""

    def __init__(
        self, encoder: TextEncoder, keep_texts: bool = False, *, bucketing: bool = True,
        overhead: int = 64, max_rows: int = MAX_CHUNK_ROWS,
    ):
        self.encoder = encoder
        self.keep_texts = keep_texts
        self.bucketing, self.overhead, self.max_rows = bucketing, overhead, max_rows

    def __call__(self, pairs: list[Pair]) -> dict[str, Any]:
        documents = [p.positive for p in pairs] + [n for p in pairs for n in p.negatives]
        queries = [p.query for p in pairs]
        if is_images(documents):  # captions and images (an ImageTextEncoder)
            texts = self.encoder.chunks(queries, documents, overhead=self.overhead,
                                        max_rows=self.max_rows, bucketing=self.bucketing)
        else:
            texts = tokenize_chunks(
                self.encoder.tokenizer, queries + documents, self.encoder.max_seq_length,
                overhead=self.overhead, max_rows=self.max_rows, bucketing=self.bucketing,
                groups=(len(queries),),
            )
        batch = {
            "texts": texts,
            "rows": len(pairs),
            "query_ids": torch.tensor([text_id(t) for t in queries]),
            "doc_ids": torch.tensor([text_id(t) for t in documents]),
        }
        if self.keep_texts:  # for a teacher with its own tokenizer
            batch["query_texts"], batch["document_texts"] = queries, documents
        return batch


def trainer_config(config: Any) -> EmbeddingTrainerConfig:
    """A validated EmbeddingTrainerConfig from an instance or a (nested) mapping of its keys."""
    if isinstance(config, EmbeddingTrainerConfig):
        options = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        options = dict(config)
    else:
        raise ConfigError(
            f"trainer: expected an EmbeddingTrainerConfig or a mapping, got {type(config).__name__}",
            "pass a dict such as {'model': {'model_name': ...}, 'data': {'train_file': ...}}",
        )
    cfg = from_options(EmbeddingTrainerConfig, options, "trainer")
    model_config(cfg.model, "trainer.model")  # ranges and choices
    for key in ("batch_size", "epochs", "eval_batch_size", "log_every", "grad_cache_chunk_size"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"trainer.{key} is {getattr(cfg, key)}; it must be at least 1",
                              f"pass trainer.{key}=N")
    for key in ("checkpoint_every", "eval_every"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"trainer.{key} is {getattr(cfg, key)}; it must be 0 or more",
                              f"pass trainer.{key}=0")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ConfigError(f"trainer.max_steps is {cfg.max_steps}; it must be at least 1 (or null)",
                          "pass trainer.max_steps=N")
    if cfg.optim.gradient_accumulation_steps < 1:
        raise ConfigError("trainer.optim.gradient_accumulation_steps must be at least 1",
                          "pass trainer.optim.gradient_accumulation_steps=1")
    if cfg.optim.mixed_precision not in MIXED_PRECISION:
        raise ConfigError(f"trainer.optim.mixed_precision is {cfg.optim.mixed_precision!r}",
                          f"use one of {', '.join(MIXED_PRECISION)}")
    if cfg.loss.distillation_loss not in ("kl", "mse"):
        raise ConfigError(f"trainer.loss.distillation_loss is {cfg.loss.distillation_loss!r}",
                          "use kl or mse")
    if cfg.loss.distillation_temperature <= 0 or cfg.loss.distillation_weight < 0:
        raise ConfigError(
            "trainer.loss.distillation_temperature must be above 0 and distillation_weight 0 or more",
            "pass e.g. trainer.loss.distillation_temperature=0.05",
        )
    return cfg


def model_fingerprint(model: nn.Module) -> str:
    """A hash of every parameter's name and shape: equal for the same architecture (and LoRA
    setup), different for another model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
    return digest.hexdigest()[:16]


def find_checkpoint(resume_from: str, output_dir: Path) -> Path:
    if resume_from != "latest":
        return Path(resume_from)
    candidates = sorted((output_dir / "checkpoints").glob("step-*"))
    complete = [c for c in candidates if (c / "manifest.json").is_file()]
    if not complete:
        raise ConfigError(
            f"resume_from=latest: no complete checkpoint under {output_dir / 'checkpoints'}",
            "set trainer.output_dir to the run that wrote the checkpoints, or drop resume_from",
        )
    return complete[-1]


def unlisted_files(path: Path, manifest: dict[str, Any]) -> list[str]:
    """Files in a checkpoint directory that its manifest does not list (write_manifest lists
    every file but itself and dot-files): accelerate would load some of them by name."""
    listed = set(manifest.get("files", {}))
    found = (p.relative_to(path).as_posix() for p in path.rglob("*")
             if (p.is_file() or p.is_symlink()) and p.name != MANIFEST_NAME and not p.name.startswith("."))
    return sorted(rel for rel in found if rel not in listed)


def read_checkpoint(path: Path, fingerprint: str, source: str) -> dict[str, Any]:
    """The manifest of a checkpoint this trainer wrote, after checking, before anything in it is
    unpickled, that every file has the size and sha256 the manifest lists and that no other
    file was added (ArtifactError naming the file otherwise)."""
    if not path.is_dir():
        raise ConfigError(f"checkpoint {path} does not exist", "check trainer.resume_from")
    fix = "resume from an earlier checkpoint (checkpoints/step-*) or start a new run"
    try:
        manifest = verify_artifact(path)
    except ArtifactError as exc:
        raise ArtifactError(f"checkpoint {path} is incomplete, damaged or altered, or not written "
                            f"by this trainer: {exc.problem}", fix) from exc
    if manifest.get("kind") != CHECKPOINT_KIND:
        raise ConfigError(f"{path} is not an embedding-trainer checkpoint",
                          "point trainer.resume_from at a checkpoints/step-* directory")
    extra = unlisted_files(path, manifest)
    if extra:
        raise ArtifactError(f"checkpoint {path} holds {path / extra[0]}, which its manifest does not "
                            f"list ({len(extra)} such file(s)): it was altered after it was written",
                            f"{fix}; never resume from a checkpoint you did not write")
    require_keys(manifest, {"scheduler_state": dict, "step": int, "epoch": int,
                            "batches_in_epoch": int}, path)
    if manifest.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"checkpoint {path} was written for a different model ({manifest.get('source')!r}, "
            f"parameters {manifest.get('fingerprint')}), not {source!r} (parameters {fingerprint})",
            "resume with the model options the checkpoint was trained with, or start a new run",
        )
    return manifest


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def plot_curve(history: list[dict[str, Any]], evaluations: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot([h["step"] for h in history], [h["loss"] for h in history])
    axes[0].set(xlabel="optimizer step", ylabel="loss", title="training loss")
    points = [(e["step"], e["ndcg@10"]) for e in evaluations if not math.isnan(e["ndcg@10"])]
    if points:
        axes[1].plot(*zip(*points, strict=True), marker="o")
    axes[1].set(xlabel="optimizer step", ylabel="nDCG@10", title="validation nDCG@10")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def train(config: Any, *, seed: int = 0, device: str = "auto") -> dict[str, Any]:
    """Train as `config` (an EmbeddingTrainerConfig or a mapping of its keys) says; returns the
    summary also written to output_dir/metrics.json."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    cfg = trainer_config(config)
    output_dir = Path(cfg.output_dir) if cfg.output_dir else job_output_dir()
    train_pairs, validation = load_splits(cfg.data, seed)
    torch_device = resolve_device(device)
    # accelerate keeps its settings in a process-wide singleton; a second train() in the same
    # process (a notebook, a test) must be able to choose other settings. The process group
    # (PartialState) is kept.
    AcceleratorState._reset_state()
    try:
        accelerator = Accelerator(
            cpu=torch_device.type == "cpu",
            kwargs_handlers=[DistributedDataParallelKwargs(
                # GradCache's chunk passes leave the loss's parameters out of DDP's graph
                find_unused_parameters=cfg.model.find_unused_parameters or cfg.grad_cache)],
            mixed_precision=cfg.optim.mixed_precision,
            gradient_accumulation_steps=cfg.optim.gradient_accumulation_steps,
            log_with=list(cfg.log_with) or None, project_dir=str(output_dir / "trackers"),
        )
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"accelerate refused the setup: {exc}",
                          "check trainer.optim.mixed_precision for this device and trainer.log_with "
                          "(installed accelerate trackers, e.g. [tensorboard])") from exc
    if cfg.log_with:
        available = {str(getattr(t, "value", getattr(t, "name", t))) for t in accelerator.log_with}
        missing = [name for name in cfg.log_with if name != "all" and name not in available]
        if missing:
            raise ConfigError(f"trainer.log_with: tracker(s) {missing} are not available",
                              "install the tracker's package (e.g. pip install tensorboard) or drop it")
        accelerator.init_trackers("embedding", config={
            "model_name": cfg.model.model_name, "batch_size": cfg.batch_size,
            "learning_rate": cfg.optim.learning_rate, "seed": seed,
        })
    accum = cfg.optim.gradient_accumulation_steps
    per_step = cfg.batch_size * accum * accelerator.num_processes
    if cfg.batch_size > len(train_pairs):
        raise ConfigError(
            f"trainer.batch_size={cfg.batch_size} is larger than the training set "
            f"({len(train_pairs)} training pairs from {cfg.data.train_file})",
            f"pass trainer.batch_size={len(train_pairs)} or less, or add data",
        )
    steps_per_epoch = len(train_pairs) // per_step
    if steps_per_epoch == 0:
        raise ConfigError(
            f"one optimizer step needs {per_step} pairs (batch_size x gradient_accumulation_steps "
            f"x processes), but the training set has {len(train_pairs)}",
            "lower trainer.batch_size or gradient_accumulation_steps, or add data",
        )
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    set_seed(seed)

    encoder = build_model(cfg.model)
    image_text = isinstance(encoder, ImageTextBase)
    if image_text != bool(cfg.data.image_column):
        raise ConfigError(
            f"{cfg.model.model_name} is {'an image-text' if image_text else 'a text'} model, "
            f"but data.image_column is {cfg.data.image_column!r}",
            "set data.image_column to the image-path column for a CLIP model (and only for one)",
        )
    apply_lora(encoder, cfg.model, accelerator)
    # a CLIP model's learnable temperature starts from its own logit scale
    own_temperature = getattr(encoder, "temperature", None) if image_text else None
    start_temperature = (own_temperature if own_temperature and cfg.loss.learnable_temperature
                         else cfg.loss.temperature)
    loss_options = {**dataclasses.asdict(cfg.loss), "temperature": start_temperature}
    loss = build_loss(loss_options.pop("name"), matryoshka_dims=loss_options.pop("matryoshka_dims"),
                      **loss_options)
    dims = list(cfg.loss.matryoshka_dims)
    if dims and max(dims) >= encoder.embedding_dim:
        raise ConfigError(
            f"trainer.loss.matryoshka_dims {dims} must all be below the embedding size "
            f"{encoder.embedding_dim}",
            "drop the sizes that are not smaller than the embedding",
        )
    teacher = build_teacher_model(cfg.model)
    if teacher is not None and isinstance(teacher, ImageTextBase) != image_text:
        raise ConfigError(
            f"the teacher {cfg.model.teacher_model_name} is {'an image-text' if not image_text else 'a text'} "
            f"model, the student {'an image-text' if image_text else 'a text'} one",
            "distil from a teacher that embeds the same kind of documents (texts or images)")
    distillation = None
    if teacher is not None:
        distillation = {"kind": cfg.loss.distillation_loss, "weight": cfg.loss.distillation_weight,
                        "temperature": cfg.loss.distillation_temperature}
    module = ContrastiveModel(encoder, loss, distillation, cfg.loss.cross_device_negatives)
    fingerprint = model_fingerprint(module)
    optimizer = build_optimizer([module], cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, total_steps)
    sampler = EpochSampler(len(train_pairs), steps_per_epoch * per_step, seed)
    loader = torch.utils.data.DataLoader(
        train_pairs, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
        collate_fn=PairCollator(
            encoder, keep_texts=teacher is not None, bucketing=cfg.length_bucketing,
            overhead=overhead_tokens(accelerator.device.type),
            max_rows=cfg.grad_cache_chunk_size if cfg.grad_cache else MAX_CHUNK_ROWS,
        ),
        # its own generator: creating an iterator (as resuming does) must not draw from the
        # global RNG that dropout uses, or a resumed run would drift from an uninterrupted one
        generator=torch.Generator().manual_seed(seed),
    )
    module, optimizer, loader = accelerator.prepare(module, optimizer, loader)
    # the scheduler's state goes into the checkpoint's manifest (JSON), not through accelerate's
    # custom-object checkpointing, which unpickles with weights_only=False
    if not cfg.grad_cache:  # its chunk passes change the graph between calls
        enable_static_graph(module, cfg.model, accelerator)
    module = compile_model(module, cfg.model, accelerator)
    unwrapped = accelerator.unwrap_model(module)
    if teacher is not None:
        teacher.to(accelerator.device)

    step, epoch, consumed, history, evaluations = 0, 0, 0, [], []
    running: list[float] = []  # micro-batch losses since the last history entry
    resumed_from = None
    # what the data position means: resuming with other data or batch sizes would replay wrongly
    data_layout = {"train_pairs": len(train_pairs), "pairs_per_step": per_step,
                   "batch_size": cfg.batch_size, "seed": seed}
    if cfg.resume_from:
        checkpoint = find_checkpoint(cfg.resume_from, output_dir)
        state = read_checkpoint(checkpoint, fingerprint, cfg.model.model_name)
        if state.get("data_layout") != data_layout:
            raise ConfigError(
                f"checkpoint {checkpoint} was written for data layout {state.get('data_layout')}, "
                f"this run has {data_layout}",
                "resume with the same data, batch_size, gradient_accumulation_steps, processes "
                "and seed, or start a new run",
            )
        # every file was checked against the manifest above; torch.load is still weights_only
        accelerator.load_state(str(checkpoint), load_kwargs={"weights_only": True})
        scheduler.load_state_dict(state["scheduler_state"])
        step, epoch, consumed = state["step"], state["epoch"], state["batches_in_epoch"]
        history, evaluations = state["history"], state["evaluations"]
        running[:] = state.get("running_losses", [])
        resumed_from = str(checkpoint)
        accelerator.print(f"resumed from {checkpoint} at step {step}")

    def evaluate(label: str) -> None:
        if not validation or not accelerator.is_main_process:
            return
        result = evaluate_pairs(unwrapped.encoder, validation, cfg.eval_batch_size, accelerator.device)
        if image_text:
            result.update(evaluate_zero_shot(unwrapped.encoder, validation, cfg.eval_batch_size,
                                             accelerator.device))
        result.update(step=step, label=label)
        evaluations.append(result)
        accelerator.log({f"eval/{k}": v for k, v in result.items()
                         if isinstance(v, float) and not math.isnan(v)}, step=step)
        accelerator.print(f"[{label} step {step}] nDCG@10={result['ndcg@10']:.4f} "
                          f"R@1={result['recall@1']:.4f} R@10={result['recall@10']:.4f}"
                          + (f" zero-shot={result['zero_shot_accuracy']:.4f}" if image_text else ""))

    def save_checkpoint() -> Path:
        path = output_dir / "checkpoints" / f"step-{step:06d}"
        accelerator.wait_for_everyone()
        accelerator.save_state(str(path))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_manifest(path, {
                "kind": CHECKPOINT_KIND, "source": cfg.model.model_name, "fingerprint": fingerprint,
                "data_layout": data_layout,
                "step": step, "epoch": epoch, "batches_in_epoch": consumed,
                "scheduler_state": scheduler.state_dict(),
                "history": history, "evaluations": evaluations, "running_losses": running,
            })
        return path

    if cfg.eval_before and not resumed_from:
        evaluate("before")
    module.train()
    started, samples = time.perf_counter(), 0
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=step, disable=not accelerator.is_local_main_process,
               desc="training", file=sys.stderr)
    last_checkpoint = None
    while step < total_steps:
        sampler.epoch = epoch
        batches = accelerator.skip_first_batches(loader, consumed) if consumed else loader
        for batch in batches:
            if teacher is not None:
                batch["teacher_embeddings"] = teacher_embeddings(teacher, batch, accelerator.device)
            for key in ("query_texts", "document_texts"):  # the teacher's; the student has ids
                batch.pop(key, None)
            with accelerator.accumulate(module):
                if cfg.grad_cache:
                    value = grad_cache_backward(module, unwrapped, batch, accelerator)
                else:
                    value = module(**batch)
                    accelerator.backward(value)
                if accelerator.sync_gradients and cfg.optim.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(module.parameters(), cfg.optim.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            consumed += 1
            samples += batch["rows"] * accelerator.num_processes
            running.append(float(value.detach()))
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == total_steps:
                history.append({"step": step, "loss": sum(running) / len(running),
                                "lr": scheduler.get_last_lr()[0],
                                "temperature": loss_temperature(unwrapped.loss)})
                accelerator.log({f"train/{k}": v for k, v in history[-1].items()
                                 if k != "step" and v is not None},
                                step=step)
                running.clear()
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps:
                evaluate("during")
                module.train()
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps:
                last_checkpoint = save_checkpoint()
            if step >= total_steps:
                break
        else:
            epoch, consumed = epoch + 1, 0
            continue
        break
    bar.close()
    elapsed = time.perf_counter() - started
    last_checkpoint = save_checkpoint()
    if cfg.eval_after:
        evaluate("after")
    summary: dict[str, Any] = {
        "steps": step,
        "epochs_started": epoch + 1,
        "train_pairs": len(train_pairs),
        "validation_pairs": len(validation),
        "samples_per_second": samples / elapsed if elapsed > 0 and samples else None,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "temperature": loss_temperature(unwrapped.loss),
        "mixed_precision": accelerator.mixed_precision,
        "processes": accelerator.num_processes,
        "main_process": accelerator.is_main_process,
        "history": history,
        "evaluations": evaluations,
        "checkpoint": str(last_checkpoint),
        "resumed_from": resumed_from,
        "model_name": cfg.model.model_name,
        "teacher_model_name": cfg.model.teacher_model_name,
        "output_dir": str(output_dir),
    }
    if accelerator.is_main_process:
        if cfg.export:
            exported = export_model(
                unwrapped.encoder, output_dir / "model",
                {"trained_steps": step, "matryoshka_dims": list(cfg.loss.matryoshka_dims),
                 "final_metrics": evaluations[-1] if evaluations else None},
                temperature=loss_temperature(unwrapped.loss), adapter=cfg.export_adapter,
            )
            summary["model_dir"] = str(exported)
        atomic_write_json(output_dir / "metrics.json", summary)
        summary["curve"] = str(plot_curve(history, evaluations, output_dir / "training_curve.png"))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    log.debug("summary: %s", json.dumps(summary, default=str)[:2000])
    return summary
