"""`job=build`: compose builder + backend from the Hydra config, build, print and return a summary."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from mlplatform.api import MLPlatformError

from .schemas import BuildJobConfig

log = logging.getLogger(__name__)


def _shape_order(item):
    order = ["min", "max", "non_square", "example"]
    return order.index(item[0]) if item[0] in order else len(order)


def summarize(result) -> dict[str, Any]:
    manifest = result.manifest
    return {
        "artifact": str(result.artifact_dir),
        "name": result.name,
        "builder": manifest["builder"],
        "backend": manifest["backend"]["name"],
        "cached": result.cached,
        "random_weights": result.random_weights,
        "dtype": manifest["dtype"],
        "device": manifest["device"].get("description"),
        "verified": bool(manifest.get("parity")),
        "max_relative_error": manifest.get("max_relative_error"),
        "tolerance": manifest.get("tolerance"),
        "parity": {
            label: {name: figures["rel"] for name, figures in shape["outputs"].items()}
            for label, shape in sorted(manifest.get("parity", {}).items(), key=_shape_order)
        },
        "latency": manifest.get("latency", {}),
        "fallback_route": manifest.get("fallback_route", {}),
        "auto": race_summary(manifest.get("backend_extra", {})),
        "profiles": [
            {
                "name": p["name"],
                "overrides": p["overrides"],
                "route": p["route"],
                "max_relative_error": p["max_relative_error"],
                "latency": p["latency"],
            }
            for p in manifest.get("profiles") or []
        ],
    }


def race_summary(extra: dict[str, Any]) -> dict[str, Any]:
    """backend=auto: the winner and each candidate's median (or why it did not run)."""
    auto = extra.get("auto")
    if not auto:
        return {}
    return {
        "winner": auto["winner"],
        "sizes": auto["sizes"],
        "race": {
            name: entry.get("ms", entry.get("status") + ": " + entry.get("reason", ""))
            for name, entry in auto["race"].items()
        },
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = []
    if summary["random_weights"]:
        lines.append(
            "*** RANDOM WEIGHTS: this artifact was built from a config only; not a trained model ***"
        )
    state = "reused cached artifact (no recompile)" if summary["cached"] else "built"
    lines.append(f"{state}: {summary['artifact']}")
    lines.append(
        f"  builder={summary['builder']} backend={summary['backend']} dtype={summary['dtype']} "
        f"device={summary['device']}"
    )
    if not summary["verified"]:
        lines.append("  parity vs eager: NOT VERIFIED (built with job.verify=false)")
    else:
        lines.append(
            f"  parity vs eager (max relative error {summary['max_relative_error']:.3g}, "
            f"tolerance {summary['tolerance']:g}):"
        )
    for label, outputs in summary["parity"].items():
        lines.append(f"    {label:<11} " + ", ".join(f"{k}={v:.3g}" for k, v in outputs.items()))
    lat = summary["latency"]
    if lat:
        lines.append(
            f"  latency at {lat['sizes']} (median of {lat['runs']}): eager {lat['eager_ms']:.1f} ms, "
            f"compiled {lat['compiled_ms']:.1f} ms, speedup {lat['speedup']}x"
        )
    if summary["auto"]:
        race = ", ".join(
            f"{name} {value} ms" if isinstance(value, (int, float)) else f"{name} ({value})"
            for name, value in summary["auto"]["race"].items()
        )
        lines.append(
            f"  backend=auto picked {summary['auto']['winner']} at {summary['auto']['sizes']}: {race}"
        )
    if summary["fallback_route"].get("use") == "eager":
        lines.append(f"  ranged package routed to eager: {summary['fallback_route']['reason']}")
    for profile in summary["profiles"]:
        error = profile["max_relative_error"]
        lines.append(
            f"  profile {profile['name']} {profile['overrides']}: runs "
            f"{profile['route']['use']}"
            + (f", max relative error {error:.3g}" if error is not None else "")
            + f" ({profile['route']['reason']})"
        )
    return "\n".join(lines)


def run_build_job(cfg: Any) -> dict[str, Any]:
    """Build what `cfg.builder` / `cfg.backend` select; returns the summary dict (also saved as JSON)."""
    from mlplatform.api import atomic_write_json, job_output_dir, to_schema

    from . import build

    job: BuildJobConfig = to_schema(cfg.job, "job")
    builder = to_schema(cfg.builder, "builder")
    backend = to_schema(cfg.backend, "backend")
    builder_options = {k: v for k, v in dataclasses.asdict(builder).items() if k != "name"}
    backend_options = {k: v for k, v in dataclasses.asdict(backend).items() if k != "name"}
    result = build(
        builder.name,
        backend.name,
        backend_options=backend_options,
        device=cfg.device,
        dtype=cfg.dtype,
        seed=cfg.seed,
        cache_dir=job.cache_dir,
        force=job.force,
        verify=job.verify,
        tolerance=job.tolerance,
        benchmark_runs=job.benchmark_runs,
        route_to_eager=job.route_to_eager,
        benchmark_shape=dict(job.benchmark_shape),
        **builder_options,
    )
    summary = summarize(result)
    print(format_summary(summary))
    try:
        atomic_write_json(job_output_dir() / "build_summary.json", summary)
    except MLPlatformError as exc:  # the summary is a convenience; the artifact is what matters
        log.warning("could not write build_summary.json: %s", exc)
    log.debug("summary: %s", json.dumps(summary, default=str))
    return summary
