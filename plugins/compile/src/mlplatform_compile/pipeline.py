"""The build pipeline behind `Build.__call__`: resolve the source, load the eager model, name the
artifact, then, under the artifact's lock, reuse a valid cached artifact or compile, verify, time
and write a new one."""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.api import ArtifactError

from . import model_source, naming
from .build import ARTIFACT_KIND, library_versions
from .modules import BuildResult
from .parity import worst
from .progress import Phases
from .specs import specs_to_json, verification_sets
from .timing import measure_latency
from .verify import check_parity, check_within_tolerance, verified_within

if TYPE_CHECKING:
    from .build import Build

log = logging.getLogger("mlplatform_compile.build")


# errnos that mean the cache cannot be written (full, over quota, not ours, read-only)
_STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS}
)


def run_build(builder: Build) -> BuildResult:
    """The pipeline behind `Build.__call__`; see the module docstring.

    The cache may be shared by parallel processes (a Hydra multirun, several users): the
    artifact's lock is held from the cache check to the final swap, so a second process building
    the same artifact waits, then finds and reuses the first one's result.
    """
    from mlplatform.api import artifact_lock, remove_stale_staging, storage_errors

    phases = Phases(builder.name or type(builder).__name__)
    with phases("resolve source"):
        source = builder.source()
        builder.backend.check_available(builder.device)
        if source.random_weights:
            log.warning("%s: %s", builder.hf_hub, model_source.RANDOM_WEIGHTS_NOTE)
    with phases("load eager model"):
        eager_module = builder.forward_module()
        key = builder.artifact_key()
        digest = naming.key_hash(key)
        name = builder.artifact_name(digest)
        artifact_dir = builder.cache_dir / name
    log.info("artifact: %s", artifact_dir)

    with storage_errors("use the compile cache", builder.cache_dir, only=_STORAGE_ERRNOS):
        with artifact_lock(artifact_dir):
            removed = remove_stale_staging(artifact_dir)
            if removed:
                log.warning("removed %d leftover(s) of killed builds: %s", len(removed), removed)
            if artifact_dir.exists() and not builder.force:
                reused = reuse_cached(builder, artifact_dir, digest, eager_module, phases)
                if reused is not None:
                    return reused
            return compile_and_save(builder, artifact_dir, key, eager_module, phases)


def reuse_cached(builder: Build, artifact_dir: Path, digest: str, eager_module, phases):
    """The cached artifact as a BuildResult, re-verified against eager when its manifest has no
    parity figures (built with verify=false) or a looser tolerance than this build asks for;
    None (after a warning) when it is unusable and must be rebuilt."""
    from mlplatform.api import atomic_write_json

    from .loader import check_manifest, load_module

    try:
        with phases("load cached artifact"):
            check_manifest(artifact_dir, expected_hash=digest)
            module = load_module(artifact_dir, device=builder.device, builder=builder)
        manifest = module.manifest
        if builder.verify and not verified_within(manifest, builder.tolerance):
            shape_sets = verification_sets(builder.specs())
            with phases(f"re-verify the cached artifact at {len(shape_sets)} shapes"):
                figures = check_parity(builder, module.runner, eager_module, shape_sets)
            error = worst(figures)
            if not error <= builder.tolerance:
                raise ArtifactError(
                    f"the cached artifact differs from eager by {error:.3g} (relative), above "
                    f"the requested tolerance {builder.tolerance:g}",
                    "it is rebuilt; pass job.tolerance=VALUE to accept a larger error",
                )
            manifest = {
                **manifest,
                "parity": figures,
                "max_relative_error": error,
                "tolerance": builder.tolerance,
                "reverified_unix": int(time.time()),
            }
            atomic_write_json(artifact_dir / "manifest.json", manifest)
            module.manifest = manifest
            log.info("re-verified %s against eager: max relative error %.3g", artifact_dir, error)
    except ArtifactError as exc:
        log.warning("cached artifact is unusable, rebuilding it: %s", exc.problem)
        return None
    log.info("reused %s (no recompile; force=true rebuilds)", artifact_dir)
    return BuildResult(artifact_dir.name, artifact_dir, manifest, module, builder, cached=True)


def compile_and_save(builder: Build, artifact_dir: Path, key, eager_module, phases) -> BuildResult:
    """Compile, verify, time and write the artifact under the staging name, then swap it in."""
    from mlplatform.api import read_manifest, staged_directory, write_manifest

    from .backends.base import CompileRequest
    from .loader import CompiledModule, load_module

    specs = builder.specs()
    shape_sets = verification_sets(specs)
    example = builder.make_inputs(next(s for s in shape_sets if s.label == "example").sizes)
    with staged_directory(artifact_dir) as staging:
        request = CompileRequest(
            module=eager_module,
            specs=specs,
            example_inputs=example,
            device=builder.device,
            dtype=builder.dtype,
            staging_dir=staging,
            cache_dir=builder.cache_dir / "_compiler_cache",
        )
        with phases(f"compile ({builder.backend.name})"):
            runner = builder.backend.compile(request)
        figures: dict[str, Any] = {}
        if builder.verify:
            with phases(f"verify against eager at {len(shape_sets)} shapes"):
                figures = check_parity(builder, runner, eager_module, shape_sets)
            check_within_tolerance(builder, figures)
        latency: dict[str, Any] = {}
        if builder.benchmark_runs > 0:
            with phases("time eager vs compiled"):
                latency = measure_latency(builder, eager_module, runner, shape_sets)
        info = manifest_info(builder, artifact_dir.name, key, request, figures, latency, phases)
        with phases("write artifact"):
            write_manifest(staging, info)
    log.info("[%s] built %s in %.1fs", phases.title, artifact_dir, phases.elapsed)
    if builder.backend.self_contained:
        module = load_module(artifact_dir, device=builder.device, builder=builder)
    else:
        module = CompiledModule(runner, read_manifest(artifact_dir), builder.device, artifact_dir)
    return BuildResult(
        artifact_dir.name, artifact_dir, module.manifest, module, builder, cached=False
    )


def manifest_info(builder: Build, name, key, request, figures, latency, phases) -> dict[str, Any]:
    """Everything the manifest records besides the file checksums write_manifest adds."""
    from mlplatform.api import describe_device, device_fingerprint

    source = builder.source()
    info = {
        "kind": ARTIFACT_KIND,
        "name": name,
        "key_hash": naming.key_hash(key),
        "key": key,
        "builder": builder.name,
        "builder_args": {
            "hf_hub": builder.hf_hub,
            "label": builder.label,
            "dtype": builder.dtype,
            "build_kwargs": _plain(builder.build_kwargs),
            "model_kwargs": _plain(builder.model_kwargs),
            "random_weights": builder.random_weights,
            "seed": builder.seed,
        },
        "model_type": builder.model_type,
        "model_source": source.describe(),
        "random_weights": source.random_weights,
        "model_config": source.config,
        "weights_sha256": builder.weights_fingerprint(),
        "backend": {"name": builder.backend.name, **builder.backend.key()},
        "backend_extra": _plain(request.extra),
        "self_contained": builder.backend.self_contained,
        "dtype": builder.dtype,
        "device": {
            **device_fingerprint(builder.device),
            "description": describe_device(builder.device),
        },
        "versions": library_versions(),
        "inputs": specs_to_json(request.specs),
        "output_names": list(builder.model_output_names),
        "ranges": {k: list(v) for k, v in builder.ranges().items()},
        "tolerance": builder.tolerance,
        "verified": bool(figures),
        "parity": figures,
        "max_relative_error": worst(figures) if figures else None,
        "latency": latency,
        "build_seconds": phases.timings,
    }
    if source.random_weights:
        info["warning"] = model_source.RANDOM_WEIGHTS_NOTE
    return info


def _plain(obj: Any) -> Any:
    """JSON-friendly copy (tuples to lists, paths to strings)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)

