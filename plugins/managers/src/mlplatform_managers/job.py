"""`job=infer`: the Hydra config turned into plain arguments once, then the task runs."""

from __future__ import annotations

import logging
import os
from typing import Any

from mlplatform.api import (
    ConfigError,
    MLPlatformError,
    atomic_write_json,
    get_registry,
    job_output_dir,
    to_schema,
)

from .batch import distributed
from .download import DownloadPolicy
from .manager import ModelManager
from .schemas import InferJobConfig, ManagerConfig, ModelConfig
from .tasks import Task, TaskContext

log = logging.getLogger(__name__)
NO_MODEL = "none"  # model=none: tasks such as task=list need no model


def manager_from_config(options: ManagerConfig) -> ModelManager:
    if options.download_timeout <= 0 or options.download_retries < 0 or options.download_backoff < 0:
        raise ConfigError(
            "manager.download_timeout must be > 0, download_retries and download_backoff >= 0",
            "pass e.g. manager.download_timeout=30 manager.download_retries=3",
        )
    if options.budget_bytes is not None and options.budget_bytes <= 0:
        raise ConfigError(f"manager.budget_bytes is {options.budget_bytes}; it must be > 0",
                          "pass a byte count, or null for free memory minus reserve_bytes")
    return ModelManager(
        options.models_dir,
        catalog_dirs=[str(d) for d in options.catalog_dirs],
        offline=options.offline,
        budget_bytes=options.budget_bytes,
        reserve_bytes=options.reserve_bytes,
        allow_unhashed=[str(n) for n in options.allow_unhashed],
        allow_pickle=[str(n) for n in options.allow_pickle],
        accept_licences=[str(n) for n in options.accept_licences],
        hf_cache_dir=options.hf_cache_dir,
        download_policy=DownloadPolicy(
            timeout=options.download_timeout, retries=options.download_retries,
            backoff=options.download_backoff, progress=options.progress,
        ),
    )


def find_task(name: str) -> Any:
    """The registered task: a Task (instances or classes), or a plain `run(cfg)` callable."""
    task = get_registry().get("task", name)
    if isinstance(task, type) and issubclass(task, Task):
        return task()
    if isinstance(task, Task) or callable(task):
        return task
    raise ConfigError(
        f"task {name!r} is registered as a {type(task).__name__}, neither a Task nor a callable",
        "register a mlplatform_managers.Task instance or a function run(cfg)",
    )


def run_infer_job(cfg: Any) -> dict[str, Any]:
    to_schema(cfg.job, "job")  # InferJobConfig: refuses stray keys under job.
    task_options = to_schema(cfg.task, "task")
    task = find_task(task_options.name)
    if not isinstance(task, Task):
        # a plain task of another plugin (e.g. task=embed): it reads the composed config itself
        result = task(cfg)
        _save_summary(task_options.name, None, result)
        return result
    model_options: ModelConfig = to_schema(cfg.model, "model")
    manager_options: ManagerConfig = to_schema(cfg.manager, "manager")
    if not isinstance(task_options, task.schema):
        raise ConfigError(
            f"task {task.name!r} expects options of type {task.schema.__name__}, the config "
            f"gave {type(task_options).__name__}",
            f"name /schema/task/{task.name} first in task/{task.name}.yaml's defaults list",
        )
    manager = manager_from_config(manager_options)
    model = None if model_options.name in ("", NO_MODEL) else model_options.name
    if task.model_types:
        if model is None:
            candidates = [e.name for t in task.model_types for e in manager.filtered(type=t)]
            raise ConfigError(
                f"task={task.name} needs a model of type {' or '.join(task.model_types)}",
                f"pass model=NAME (catalog: {', '.join(candidates) or 'none of that type'}); "
                "`job=infer task=list` shows them",
            )
        entry = manager.entry(model)
        if entry.type not in task.model_types:
            fitting = [e.name for t in task.model_types for e in manager.filtered(type=t)]
            raise ConfigError(
                f"model {model!r} is a {entry.type} model; task={task.name} takes "
                f"{' or '.join(task.model_types)} models",
                f"pick one of: {', '.join(fitting) or '(none in the catalog)'}",
            )
    elif model is not None:
        manager.entry(model)
    context = TaskContext(manager=manager, model=model, device=cfg.device, dtype=cfg.dtype,
                          seed=cfg.seed, output_dir=job_output_dir())
    try:
        result = task.run(context, task_options)
    finally:
        manager.unload_all()
    _save_summary(task.name, model, result)
    return result


def _save_summary(task: str, model: str | None, result: Any) -> None:
    rank = int(os.environ.get("RANK", "0")) if distributed() else 0
    name = f"infer_result.rank{rank}.json" if rank else "infer_result.json"  # one per process
    try:
        atomic_write_json(job_output_dir() / name,
                          {"task": task, "model": model, "result": result})
    except (MLPlatformError, TypeError, ValueError) as exc:  # a convenience copy only
        log.warning("could not write infer_result.json: %s", exc)


__all__ = ["InferJobConfig", "manager_from_config", "run_infer_job"]
