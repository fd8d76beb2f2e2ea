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
from .profiles import FALLBACK, PROFILES_DIR
from .progress import Phases
from .specs import specs_from_json, specs_to_json, verification_sets
from .timing import measure_latency, measure_profile
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
            result = None
            if artifact_dir.exists() and not builder.force:
                result = reuse_cached(builder, artifact_dir, digest, eager_module, phases)
            if result is None:
                result = compile_and_save(builder, artifact_dir, key, eager_module, phases)
    release_eager(builder, result)
    return result


def release_eager(builder: Build, result: BuildResult) -> None:
    """Drop the builder's eager model when the compiled module runs without it, so a process
    that builds and then serves does not hold the weights twice (`result.eager_module` loads
    the model again on demand)."""
    routes = getattr(result.module, "routes", {}).values()
    if builder.backend.self_contained and all(route == "compiled" for route in routes):
        builder._eager = None


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
            profiles = []
            for entry in manifest.get("profiles") or []:
                sets = verification_sets(specs_from_json(entry["inputs"]))
                with phases(f"re-verify profile {entry['name']} at {len(sets)} shapes"):
                    pfigures = check_parity(
                        builder, module.package(entry["name"]), eager_module, sets
                    )
                profiles.append({**entry, "parity": pfigures, "max_relative_error": worst(pfigures)})
            error = max([worst(figures)] + [p["max_relative_error"] for p in profiles])
            if not error <= builder.tolerance:
                raise ArtifactError(
                    f"the cached artifact differs from eager by {error:.3g} (relative), above "
                    f"the requested tolerance {builder.tolerance:g}",
                    "it is rebuilt; pass job.tolerance=VALUE to accept a larger error",
                )
            manifest = {
                **manifest,
                "parity": figures,
                "profiles": profiles,
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
    """Compile, verify and time the ranged package and each shape profile under the staging
    name, decide which packages eager replaces (job.route_to_eager), then swap the artifact in."""
    from mlplatform.api import read_manifest, staged_directory, write_manifest

    from .loader import CompiledModule, load_module

    with staged_directory(artifact_dir) as staging:
        runner, request, figures = compile_package(
            builder, eager_module, builder.specs(), staging, phases, FALLBACK
        )
        latency: dict[str, Any] = {}
        if builder.benchmark_runs > 0:
            with phases("time eager vs compiled"):
                latency = measure_latency(builder, eager_module, runner, builder.benchmark_sizes())
        fallback_route = decide_route(builder, FALLBACK, latency)
        fallback_runner = eager_module if fallback_route["use"] == "eager" else runner
        profile_runners: dict[str, Any] = {}
        profile_info: list[dict[str, Any]] = []
        for profile in builder.profiles():
            folder = staging / PROFILES_DIR / profile.name
            folder.mkdir(parents=True)
            prunner, prequest, pfigures = compile_package(
                builder, eager_module, profile.specs, folder, phases, profile.name
            )
            platency: dict[str, Any] = {}
            if builder.benchmark_runs > 0:
                sizes = builder.benchmark_sizes(profile.specs)
                with phases(f"time profile {profile.name}: eager vs profile vs fallback"):
                    platency = measure_profile(builder, eager_module, prunner, runner, sizes)
            route = decide_route(builder, profile.name, platency)
            profile_runners[profile.name] = {
                "eager": eager_module, "fallback": fallback_runner
            }.get(route["use"], prunner)
            profile_info.append(
                {
                    **profile.to_json(),
                    "route": route,
                    "parity": pfigures,
                    "max_relative_error": worst(pfigures) if pfigures else None,
                    "latency": platency,
                    "backend_extra": _plain(prequest.extra),
                }
            )
        info = manifest_info(builder, artifact_dir.name, key, request, figures, latency, phases)
        info["fallback_route"] = fallback_route
        info["profiles"] = profile_info
        if figures:
            info["max_relative_error"] = max(
                [worst(figures)] + [p["max_relative_error"] for p in profile_info]
            )
        with phases("write artifact"):
            write_manifest(staging, info)
    log.info("[%s] built %s in %.1fs", phases.title, artifact_dir, phases.elapsed)
    if builder.backend.self_contained:
        module = load_module(artifact_dir, device=builder.device, builder=builder)
    else:
        module = CompiledModule(
            fallback_runner, read_manifest(artifact_dir), builder.device, artifact_dir,
            profile_runners, eager_module,
        )
    return BuildResult(
        artifact_dir.name, artifact_dir, module.manifest, module, builder, cached=False
    )


def compile_package(builder: Build, eager_module, specs, folder: Path, phases, what: str):
    """One package (the ranged fallback or a profile) compiled into `folder` and verified against
    eager at its own min, max, non-square and example shapes: (runner, request, parity)."""
    from .backends.base import CompileRequest, RaceSettings

    shape_sets = verification_sets(specs)
    example = builder.make_inputs(next(s for s in shape_sets if s.label == "example").sizes)
    request = CompileRequest(
        module=eager_module,
        specs=list(specs),
        example_inputs=example,
        device=builder.device,
        dtype=builder.dtype,
        staging_dir=folder,
        cache_dir=builder.cache_dir / "_compiler_cache",
        race=RaceSettings(
            make_inputs=builder.make_inputs,
            shape_sets=shape_sets,
            tolerance=builder.tolerance,
            runs=max(1, builder.benchmark_runs),
            output_names=tuple(builder.model_output_names),
            sizes=builder.benchmark_sizes(None if what == FALLBACK else specs),
        ),
    )
    suffix = "" if what == FALLBACK else f", profile {what}"
    with phases(f"compile ({builder.backend.name}{suffix})"):
        runner = builder.backend.compile(request)
    figures: dict[str, Any] = {}
    if builder.verify:
        with phases(f"verify against eager at {len(shape_sets)} shapes{suffix}"):
            figures = check_parity(builder, runner, eager_module, shape_sets)
        check_within_tolerance(builder, figures, what)
    return runner, request, figures


def decide_route(builder: Build, what: str, latency: Mapping[str, Any]) -> dict[str, Any]:
    """{"use": "compiled" | "fallback" | "eager", "reason": ..., ["eager_at": [sizes]]}: the
    fastest runner at the package's benchmark shape. A profile whose own package is slower there
    than the ranged fallback runs on the fallback (static packages are not always faster: on CPU
    they were slower than the ranged ones for onnxruntime and aot_inductor, see docs/compile.md),
    and a package slower than eager is replaced by eager, so that no timed shape runs slower than
    eager: a profile wholly; the ranged fallback at its benchmark shape only (`eager_at`: one
    timing does not speak for the whole range), or wholly with job.route_to_eager=all; `never`
    keeps every package. The figures stay in the manifest."""
    speedup = latency.get("speedup") if latency else None
    if builder.backend.name == "eager":
        return {"use": "compiled", "reason": "the eager backend is eager already"}
    if speedup is None:
        return {"use": "compiled", "reason": "not timed (job.benchmark_runs=0)"}
    measured = (
        f"compiled {latency['compiled_ms']} ms vs eager {latency['eager_ms']} ms at "
        f"{latency['sizes']} ({speedup}x)"
    )
    if builder.route_to_eager == "never":
        return {"use": "compiled", "reason": measured}
    choices = {"compiled": latency["compiled_ms"], "eager": latency["eager_ms"]}
    if what != FALLBACK and latency.get("fallback_ms") is not None:
        choices["fallback"] = latency["fallback_ms"]
        measured += f"; ranged fallback {latency['fallback_ms']} ms"
    use = min(choices, key=choices.get)
    if use == "eager" and what == FALLBACK and builder.route_to_eager == "profiles":
        log.warning(
            "%s: %s is slower than eager; that shape runs eager, the rest of the range stays "
            "compiled (job.route_to_eager=all routes the whole range to eager, backend=auto "
            "races the other backends)", what, measured,
        )
        return {
            "use": "compiled",
            "eager_at": [dict(latency["sizes"])],
            "reason": f"slower than eager at its benchmark shape, which runs eager: {measured}",
        }
    if use == "eager":
        log.warning("%s: %s is slower than eager; routing it to eager", what, measured)
        return {"use": "eager", "reason": f"slower than eager: {measured}"}
    if use == "fallback":
        log.info("%s: the ranged fallback is faster at its shape; routing it there: %s", what, measured)
        return {"use": "fallback", "reason": f"the ranged fallback is faster: {measured}"}
    return {"use": "compiled", "reason": measured}


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

