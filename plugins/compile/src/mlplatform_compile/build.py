"""The `Build` base class (DinoML vocabulary) and the build pipeline.

A builder subclass declares what to build: `model_name` (a format string for the readable part of
the artifact name), `model_type`, `model_forward`, `model_output_names`, `map_function` and
`map_function_skip_keys`, plus how to load the model and describe its inputs. Calling a builder
runs: resolve source -> load eager model -> name the artifact -> reuse it if a valid one exists ->
compile -> verify against eager across the dynamic range -> time -> write artifact + manifest.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlplatform.api import (
    ArtifactError,
    ConfigError,
    MLPlatformError,
    ModelSourceError,
    from_options,
    resolve_device,
    resolve_dtype,
)

from . import model_source, naming, parity
from .progress import Phases
from .schemas import BuilderConfig, BuildJobConfig
from .specs import InputSpec, ShapeSet, all_dims, concrete_shape, specs_to_json, verification_sets

log = logging.getLogger("mlplatform_compile.build")
ARTIFACT_KIND = "mlplatform_compile.artifact"


def default_cache_dir() -> Path:
    """$MLPLATFORM_COMPILE_CACHE, else $XDG_CACHE_HOME/mlplatform/compile (~/.cache/...)."""
    env = os.environ.get("MLPLATFORM_COMPILE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlplatform" / "compile"


def check_job_settings(job: BuildJobConfig, seed: Any) -> None:
    """Values a type cannot rule out: a negative run count, a tolerance that accepts anything."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an int, got {seed!r}", "pass seed=0 (any integer)")
    if job.benchmark_runs < 0:
        raise ConfigError(
            f"job.benchmark_runs is {job.benchmark_runs}; it counts timed runs",
            "pass job.benchmark_runs=0 to skip timing, or a positive count",
        )
    if job.tolerance is not None and not (math.isfinite(job.tolerance) and job.tolerance > 0):
        raise ConfigError(
            f"job.tolerance is {job.tolerance}; it must be a positive, finite relative error",
            "pass e.g. job.tolerance=1e-3, or job.tolerance=null for the dtype's default",
        )


def weights_fingerprint(state_dict: Mapping[str, Any]) -> str:
    """sha256 over names, dtypes, shapes and bytes of every tensor: what the artifact bakes in."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class ForwardModule:
    """Factory for the nn.Module every backend compiles: `forward(*inputs) -> tuple` in output order."""

    @staticmethod
    def wrap(builder: Build, model):
        import torch

        class _Forward(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *inputs):
                return builder.run_forward(self.model, *inputs)

        return _Forward().eval()


class NamedModule:
    """Named inputs in, named outputs out, around a positional runner (eager or compiled)."""

    def __init__(self, runner, specs: Sequence[InputSpec], output_names: Sequence[str]):
        self.runner = runner
        self.specs = list(specs)
        self.input_names = [s.name for s in self.specs]
        self.output_names = list(output_names)

    def __call__(self, inputs: Mapping[str, Any] | None = None, /, **named):
        import torch

        given = {**(inputs or {}), **named}
        args = [given[name] for name in self.input_names]
        with torch.no_grad():
            outputs = self.runner(*args)
        return parity.pair_outputs(
            self.output_names,
            outputs,
            f"the module behind {self.input_names} -> {self.output_names}",
            error=MLPlatformError,
            fix="make the builder's run_forward return one output per model_output_names entry",
        )


@dataclass
class BuildResult:
    """What a build returns: where the artifact is, what it measured, and callables to run."""

    name: str
    artifact_dir: Path
    manifest: dict[str, Any]
    module: Any  # loader.CompiledModule: named inputs -> named outputs, inputs checked
    builder: Build
    cached: bool
    eager: Any = None  # NamedModule around the eager model (loaded lazily)

    @property
    def eager_module(self):
        if self.eager is None:
            self.eager = NamedModule(
                ForwardModule.wrap(self.builder, self.builder.load_eager()),
                self.builder.specs(),
                self.builder.model_output_names,
            )
        return self.eager

    @property
    def random_weights(self) -> bool:
        return bool(self.manifest["model_source"].get("random_weights"))

    @property
    def parity(self) -> dict[str, Any]:
        return self.manifest.get("parity", {})

    @property
    def latency(self) -> dict[str, Any]:
        return self.manifest.get("latency", {})

    def example_inputs(
        self, shape: str | Mapping[str, int] = "example", seed: int = 0
    ) -> dict[str, Any]:
        """Named example inputs; `shape` is 'min', 'max', 'non_square', 'example' or {dim: size}."""
        return self.builder.example_inputs(shape, seed=seed)


class Build:
    """Base class for builders. Subclasses set the class attributes and the loading hooks."""

    # registry name, set by the subclass (e.g. "vae_decode")
    name = ""
    # DinoML vocabulary
    model_name = "{model_type}.{label}.b{batch}.r{resolution}.{dtype}.{device_tag}"
    model_type = ""
    model_forward = "forward"
    model_output_names: tuple[str, ...] = ("output",)
    map_function_skip_keys: tuple[str, ...] = ()
    # the typed options of builder/<name>.yaml; its build_kwargs class holds the defaults
    config_schema: type = BuilderConfig
    config_file: str | None = "config.json"

    def __init__(
        self,
        hf_hub: str,
        label: str = "",
        dtype: str = "float32",
        device: str = "auto",
        build_kwargs: Mapping[str, Any] | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        backend: Any = "aot_inductor",
        *,
        backend_options: Mapping[str, Any] | None = None,
        random_weights: bool = False,
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
        force: bool = False,
        verify: bool = True,
        tolerance: float | None = None,
        benchmark_runs: int = 3,
    ):
        # the same schemas Hydra checks job=build against: one set of accepted values
        settings = from_options(
            self.config_schema,
            {
                "name": self.name,
                "hf_hub": str(hf_hub),
                "label": label or "",
                "random_weights": random_weights,
                "model_kwargs": dict(model_kwargs or {}),
                "build_kwargs": dict(build_kwargs or {}),
            },
            f"builder {self.name}",
        )
        job = from_options(
            BuildJobConfig,
            {
                "name": "build",
                "force": force,
                "cache_dir": None if cache_dir is None else str(cache_dir),
                "verify": verify,
                "tolerance": tolerance,
                "benchmark_runs": benchmark_runs,
            },
            "job",
        )
        check_job_settings(job, seed)
        self.hf_hub = settings.hf_hub
        self.label = settings.label
        self.device = resolve_device(device)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        self.dtype = str(self.torch_dtype).removeprefix("torch.")
        self.build_kwargs = dataclasses.asdict(settings.build_kwargs)
        self.model_kwargs = {
            k: v for k, v in dataclasses.asdict(settings.model_kwargs).items() if v is not None
        }
        self.backend = _make_backend(backend, backend_options)
        self.random_weights = settings.random_weights
        self.seed = seed
        self.cache_dir = Path(job.cache_dir).expanduser() if job.cache_dir else default_cache_dir()
        self.force = job.force
        self.verify = job.verify
        self.tolerance = parity.tolerance_for(self.dtype, job.tolerance)
        self.benchmark_runs = job.benchmark_runs
        self._source: model_source.ModelSource | None = None
        self._eager = None

    # ---- what a subclass provides -------------------------------------------------------

    def instantiate(self, config: dict[str, Any]):
        """A model with freshly initialised (random) weights from `config`."""
        raise NotImplementedError

    def from_pretrained(self, directory: Path):
        """The trained model saved in `directory`."""
        raise NotImplementedError

    def input_specs(self, config: dict[str, Any]) -> list[InputSpec]:
        """The named inputs with their ranges, from `self.build_kwargs` and the model config."""
        raise NotImplementedError

    def map_function(self, key: str, tensor):
        """Map one weight to what the compiled module holds (here: cast floats to the build dtype).
        Return None to drop it, or (new_key, tensor) to rename it."""
        return tensor.to(self.torch_dtype) if tensor.is_floating_point() else tensor

    def run_forward(self, model, *inputs) -> tuple:
        """Call `model_forward` and return the outputs as a tuple in `model_output_names` order."""
        out = getattr(model, self.model_forward)(*inputs)
        if isinstance(out, (tuple, list)):
            return tuple(out[: len(self.model_output_names)])
        return (out,)

    def prepare(self, model):
        """Hook to switch off features that break tracing (tiling, slicing)."""
        return model

    # ---- source, model, weights ---------------------------------------------------------

    def source(self) -> model_source.ModelSource:
        if self._source is None:
            self._source = model_source.resolve(
                self.hf_hub,
                random_weights=self.random_weights,
                seed=self.seed,
                subfolder=self.model_kwargs.get("subfolder"),
                revision=self.model_kwargs.get("revision"),
                config_file=self.config_file,
            )
        return self._source

    def config(self) -> dict[str, Any]:
        return self.source().config

    def specs(self) -> list[InputSpec]:
        return self.input_specs(self.config())

    def map_weights(self, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        """Drop `map_function_skip_keys` prefixes, then apply `map_function` to the rest."""
        mapped: dict[str, Any] = {}
        for key, tensor in state_dict.items():
            if any(key.startswith(prefix) for prefix in self.map_function_skip_keys):
                continue
            result = self.map_function(key, tensor)
            if result is None:
                continue
            if isinstance(result, tuple):
                key, result = result
            mapped[key] = result
        return mapped

    def prune(self, model):
        """Remove the submodules named by skip keys so their weights are not compiled in."""
        for prefix in self.map_function_skip_keys:
            path = prefix.rstrip(".")
            parent_path, _, attr = path.rpartition(".")
            try:
                parent = model.get_submodule(parent_path) if parent_path else model
            except AttributeError:
                continue
            import torch

            if isinstance(getattr(parent, attr, None), torch.nn.Module):
                setattr(parent, attr, None)
        return model

    def load_eager(self):
        """The eager model on the build device and dtype, pruned and with mapped weights."""
        if self._eager is not None:
            return self._eager

        source = self.source()
        model = self._load_model(source)
        model = self.prepare(model.eval().requires_grad_(False))
        mapped = self.map_weights(model.state_dict())
        model = self.prune(model)
        first = next(iter(model.parameters()), None)
        if first is not None and first.dtype != self.torch_dtype:
            model = model.to(dtype=self.torch_dtype)
        model = model.to(device=self.device)
        missing, unexpected = model.load_state_dict(mapped, strict=False)
        if unexpected or missing:
            raise MLPlatformError(
                f"builder {self.name!r}: map_function produced weights that do not fit the pruned "
                f"model (missing {missing[:5]}, unexpected {unexpected[:5]})",
                "fix the builder's map_function / map_function_skip_keys",
            )
        self._weights_fingerprint = weights_fingerprint(mapped)
        self._eager = model
        return model

    def _load_model(self, source: model_source.ModelSource):
        """instantiate / from_pretrained, with a user's broken model files (truncated weights,
        weights missing, a config the model class rejects) reported as a ModelSourceError."""
        import torch

        try:
            if source.random_weights:
                torch.manual_seed(source.seed)
                return self.instantiate(source.config)
            return self.from_pretrained(source.directory)
        except MLPlatformError:
            raise
        except ImportError as exc:  # the model's library, not the user's files
            raise ModelSourceError(
                f"builder {self.name!r} needs the Python package {exc.name or exc}, which is "
                "not installed",
                f"pip install {exc.name or 'it'} (mlplatform-compile's dependencies list it)",
            ) from exc
        except Exception as exc:  # the loaders raise OSError, ValueError, SafetensorError, ...
            what = "its config" if source.random_weights else f"the model in {source.directory}"
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise ModelSourceError(
                f"builder {self.name!r} could not load {what} ({self.hf_hub}): "
                f"{type(exc).__name__}: {detail}",
                "check that the directory holds a complete save_pretrained output (config.json "
                "and its weights, *.safetensors or *.bin), re-download or re-save it, or pass "
                "--verbose for the traceback",
            ) from exc

    def weights_fingerprint(self) -> str:
        self.load_eager()
        return self._weights_fingerprint

    def forward_module(self):
        return ForwardModule.wrap(self, self.load_eager())

    # ---- inputs ------------------------------------------------------------------------

    def sizes_for(self, shape: str | Mapping[str, int]) -> dict[str, int]:
        specs = self.specs()
        if isinstance(shape, Mapping):
            dims = all_dims(specs)
            sizes = {n: d.min for n, d in dims.items()}
            sizes.update(shape)
            return sizes
        for shape_set in verification_sets(specs):
            if shape_set.label == shape:
                return shape_set.sizes
        raise ConfigError(
            f"unknown shape {shape!r}", "use min, max, non_square, example or {dim: size}"
        )

    def make_inputs(self, sizes: Mapping[str, int], seed: int = 0) -> tuple:
        """Positional example inputs (random) at the given sizes."""
        import torch

        generator = torch.Generator().manual_seed(seed)
        inputs = []
        for spec in self.specs():
            shape = concrete_shape(spec, sizes)
            if spec.dtype == "long":
                tensor = torch.randint(spec.low, spec.high, shape, generator=generator)
            elif spec.dtype == "float_uniform":
                tensor = torch.rand(shape, generator=generator) * (spec.high - spec.low) + spec.low
                tensor = tensor.to(self.torch_dtype)
            else:
                tensor = torch.randn(shape, generator=generator).to(self.torch_dtype)
            inputs.append(tensor.to(self.device))
        return tuple(inputs)

    def example_inputs(
        self, shape: str | Mapping[str, int] = "example", seed: int = 0
    ) -> dict[str, Any]:
        inputs = self.make_inputs(self.sizes_for(shape), seed)
        return dict(zip((s.name for s in self.specs()), inputs, strict=True))

    # ---- naming ------------------------------------------------------------------------

    def ranges(self) -> dict[str, tuple[int, int]]:
        """Ranges for the readable name: batch and resolution in the user's units (pixels)."""
        out: dict[str, tuple[int, int]] = {}
        for key in ("batch_size", "resolution", "sequence_length"):
            if key in self.build_kwargs:
                from .specs import as_range

                out[{"batch_size": "batch"}.get(key, key)] = as_range(self.build_kwargs[key], key)
        return out

    def artifact_key(self) -> dict[str, Any]:
        """Everything that changes the compiled artifact; its hash is part of the name."""
        import torch

        from mlplatform.api import device_fingerprint

        fp = device_fingerprint(self.device)
        return {
            "builder": self.name,
            "model_type": self.model_type,
            "model_forward": self.model_forward,
            "backend": self.backend.key(),
            "torch": torch.__version__,
            # a new diffusers / transformers / spandrel / mlplatform release can change the
            # traced graph, so each version is part of the key
            "versions": library_versions(),
            "dtype": self.dtype,
            "device": {"kind": fp["kind"], "capability": fp["capability"]},
            "inputs": specs_to_json(self.specs()),
            "config": model_source.config_for_key(self.config()),
            "weights": self.weights_fingerprint(),
            "skip_keys": list(self.map_function_skip_keys),
        }

    def artifact_name(self, digest: str) -> str:
        from mlplatform.api import device_fingerprint

        fields = naming.name_fields(
            device_fingerprint(self.device), self.dtype, self.label, self.model_type, self.ranges()
        )
        return naming.artifact_name(
            self.model_name, fields, self.backend.name, digest, self.source().random_weights
        )

    # ---- the build -----------------------------------------------------------------------

    def __call__(self) -> BuildResult:
        return run_build(self)


def _make_backend(backend: Any, options: Mapping[str, Any] | None):
    from .backends.base import Backend

    if isinstance(backend, Backend):
        if options:
            raise ConfigError(
                "backend options given with a backend instance", "pass one or the other"
            )
        return backend
    from mlplatform.api import get_registry

    cls = get_registry().get("backend", str(backend))
    try:
        return cls(**dict(options or {}))
    except TypeError as exc:
        raise ConfigError(
            f"bad options for backend {backend!r}: {exc}", f"check backend/{backend}.yaml"
        ) from exc


def library_versions() -> dict[str, str]:
    """Versions of every library whose code ends up in, or shapes, a compiled artifact."""
    import importlib.metadata as md

    out = {}
    for dist in (
        "torch",
        "diffusers",
        "transformers",
        "spandrel",
        "mlplatform",
        "mlplatform-compile",
    ):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    import torch

    out["torch"] = torch.__version__
    return out


def time_pair(eager, compiled, inputs, runs: int) -> tuple[float, float]:
    """Median seconds of eager and compiled, warmed up and interleaved so neither gets the
    other's warm caches or thread-pool start-up."""
    import torch

    sync = (
        torch.cuda.synchronize
        if inputs and getattr(inputs[0], "is_cuda", False)
        else (lambda: None)
    )
    times: tuple[list[float], list[float]] = ([], [])
    with torch.no_grad():
        for fn in (eager, compiled, eager, compiled):
            fn(*inputs)
        sync()
        for _ in range(runs):
            for fn, bucket in zip((eager, compiled), times, strict=True):
                start = time.perf_counter()
                fn(*inputs)
                sync()
                bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def check_parity(builder: Build, runner, eager, shape_sets: Sequence[ShapeSet]) -> dict[str, Any]:
    """Compiled vs eager at each shape set; returns per-shape, per-output error figures."""
    import torch
    from tqdm.auto import tqdm

    results: dict[str, Any] = {}
    for index, shape_set in enumerate(tqdm(shape_sets, desc="verify", leave=False, disable=None)):
        inputs = builder.make_inputs(shape_set.sizes, seed=1000 + index)
        with torch.no_grad():
            reference = eager(*inputs)
            outputs = runner(*inputs)
        not_saved = "the artifact was not saved"
        names = builder.model_output_names
        reference = parity.pair_outputs(
            names, reference, f"the eager {builder.name} model at {shape_set.label} ({not_saved})",
            error=MLPlatformError,
            fix="make the builder's run_forward return one output per model_output_names entry",
        )
        outputs = parity.pair_outputs(
            names, outputs, f"the {builder.backend.name} runner at {shape_set.label} ({not_saved})",
            fix=f"fix the {builder.backend.name} backend: its runner must return one output per "
            "model_output_names entry, in that order",
        )
        results[shape_set.label] = {
            "sizes": shape_set.sizes,
            "outputs": {name: parity.compare(reference[name], outputs[name]) for name in names},
        }
    return results


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


def verified_within(manifest: Mapping[str, Any], tolerance: float) -> bool:
    """True when the manifest holds parity figures and their worst error is within `tolerance`."""
    figures = manifest.get("parity")
    error = manifest.get("max_relative_error")
    return (
        bool(figures)
        and isinstance(error, (int, float))
        and math.isfinite(error)
        and parity.worst(figures) <= tolerance
        and error <= tolerance
    )


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
            error = parity.worst(figures)
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


def check_within_tolerance(builder: Build, figures: dict[str, Any]) -> None:
    error = parity.worst(figures)
    if error <= builder.tolerance:
        return
    per_shape = {
        label: {out: round(v["rel"], 8) for out, v in shape["outputs"].items()}
        for label, shape in figures.items()
    }
    raise ArtifactError(
        f"{builder.backend.name} output differs from eager by {error:.3g} (relative), above the "
        f"{builder.dtype} tolerance {builder.tolerance:g}; the artifact was not saved. "
        f"Per shape: {per_shape}",
        "try another backend or backend options (e.g. freezing=false), a wider dtype, "
        "or accept the error explicitly with job.tolerance=VALUE",
    )


def measure_latency(builder: Build, eager_module, runner, shape_sets) -> dict[str, Any]:
    """Eager vs compiled at the largest shape, interleaved (see time_pair)."""
    bench_sizes = next(s for s in shape_sets if s.label == "max").sizes
    bench_inputs = builder.make_inputs(bench_sizes, seed=7)
    eager_s, compiled_s = time_pair(eager_module, runner, bench_inputs, builder.benchmark_runs)
    return {
        "sizes": bench_sizes,
        "runs": builder.benchmark_runs,
        "eager_ms": round(eager_s * 1e3, 3),
        "compiled_ms": round(compiled_s * 1e3, 3),
        "speedup": round(eager_s / compiled_s, 3) if compiled_s > 0 else None,
    }


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
        "max_relative_error": parity.worst(figures) if figures else None,
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


__all__ = ["Build", "BuildResult", "NamedModule", "default_cache_dir", "weights_fingerprint"]
