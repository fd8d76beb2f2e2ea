"""Jobs the core owns: the plugin listing, the trainer dispatcher, and clear stand-ins for
standard jobs whose subsystem plugin is not installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import MLPlatformError
from .registry import Job, Registry

# the standard jobs and which plugin distribution brings each one
STANDARD_JOBS = {
    "build": ("compile builders", "plugins/compile (pip install -e plugins/compile)"),
    "infer": ("model managers", "plugins/managers (pip install -e plugins/managers)"),
    "sample": ("text diffusion", "plugins/textdiffusion (pip install -e plugins/textdiffusion)"),
}
MISSING_JOB_MARK = "no installed plugin provides this job"


def job_output_dir() -> Path:
    """The Hydra run dir of the running job (the working directory outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        return Path.cwd()


def _missing_job(name: str, subsystem: str, install: str) -> Job:
    def run(cfg: Any) -> Any:
        raise MLPlatformError(
            f"no installed plugin provides the {name!r} job (it comes with the {subsystem} plugin)",
            f"install {install}; `python -m mlplatform job=plugins` lists what is installed",
        )

    return Job(name, run, f"{MISSING_JOB_MARK}: install {install}")


def add_missing_standard_jobs(registry: Registry) -> None:
    from .registry import Entry

    for name, (subsystem, install) in STANDARD_JOBS.items():
        if name not in registry.names("job"):
            job = _missing_job(name, subsystem, install)
            registry.add(Entry("job", name, job, "mlplatform", job.description))


def is_missing_job(job: Job) -> bool:
    return job.description.startswith(MISSING_JOB_MARK)


def run_train_job(cfg: Any) -> Any:
    """Dispatch `job=train` to the trainer named by `trainer=NAME` (or trainer.name)."""
    from .plugins import get_registry

    trainer_cfg = cfg.get("trainer")
    if trainer_cfg is None or not trainer_cfg.get("name"):
        raise MLPlatformError(
            "job=train needs a trainer", "pass trainer=NAME (job=plugins lists the trainers)"
        )
    trainer = get_registry().get("trainer", trainer_cfg.name)
    return trainer(cfg)


def run_plugins_job(cfg: Any) -> list[dict[str, Any]]:
    """Print every plugin with its distribution, version, registrations and failures."""
    from .plugins import describe, get_host
    from .schemas import to_schema

    host = get_host()
    rows = [describe(record) for record in host.records]
    as_json = cfg is not None and to_schema(cfg.job, "job").json
    print(json.dumps(rows, indent=2) if as_json else format_plugin_table(rows))
    return rows


def format_plugin_table(rows: list[dict[str, Any]]) -> str:
    lines = ["Installed mlplatform plugins:"]
    for row in rows:
        head = f"- {row['name']}  [{row['status']}]  {row['distribution']} {row['version']}"
        lines.append(head + f"  ({row['module']})")
        if row["error"]:
            lines.append(f"    error: {row['error']}")
        by_kind: dict[str, list[str]] = {}
        for item in row["registered"]:
            kind, _, name = item.partition(":")
            by_kind.setdefault(kind, []).append(name)
        for kind, names in sorted(by_kind.items()):
            lines.append(f"    {kind}: {', '.join(sorted(names))}")
        for package in row["config_packages"]:
            lines.append(f"    config groups: pkg://{package}")
    return "\n".join(lines)
