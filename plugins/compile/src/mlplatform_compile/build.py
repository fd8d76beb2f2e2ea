"""The `Build` base class (DinoML vocabulary): what to build and how to load it.

A builder subclass declares what to build: `model_name` (a format string for the readable part of
the artifact name), `model_type`, `model_forward`, `model_output_names`, `map_function` and
`map_function_skip_keys`, plus how to load the model and describe its inputs. Calling a builder
runs: resolve source -> load eager model -> name the artifact -> reuse it if a valid one exists ->
compile -> verify against eager across the dynamic range -> time -> write artifact + manifest
(pipeline.py; verify.py and timing.py measure, modules.py holds what a build hands out).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlplatform.api import (
    ConfigError,
    MLPlatformError,
    ModelSourceError,
    from_options,
    resolve_device,
    resolve_dtype,
)

from . import model_source, naming, parity
from .modules import BuildResult, ForwardModule
from .schemas import BuilderConfig, BuildJobConfig
from .specs import (
    InputSpec,
    all_dims,
    as_range,
    benchmark_sizes,
    check_benchmark_shape,
    concrete_shape,
    specs_to_json,
    verification_sets,
)

log = logging.getLogger("mlplatform_compile.build")
ARTIFACT_KIND = "mlplatform_compile.artifact"
# job.route_to_eager: which compiled packages slower than eager are replaced by eager
ROUTING = ("profiles", "all", "never")


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
    if job.route_to_eager not in ROUTING:
        raise ConfigError(
            f"job.route_to_eager is {job.route_to_eager!r}",
            f"pass one of: {', '.join(ROUTING)}",
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
        route_to_eager: str = "profiles",
        benchmark_shape: Mapping[str, int] | None = None,
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
                "route_to_eager": route_to_eager,
                "benchmark_shape": dict(benchmark_shape or {}),
            },
            "job",
        )
        check_job_settings(job, seed)
        self.hf_hub = settings.hf_hub
        # a label that defaults to the source's name cannot go stale when hf_hub changes
        self.label = settings.label or naming.label_from_source(settings.hf_hub)
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
        self.route_to_eager = job.route_to_eager
        self.benchmark_shape = {str(k): int(v) for k, v in job.benchmark_shape.items()}
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

    def profiles(self):
        """The shape profiles of `build_kwargs.profiles` (profiles.Profile), in the order given."""
        from .profiles import build_profiles

        return build_profiles(self, self.specs())

    def pixel_ranges(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(height, width) in pixels: `height` / `width` where given, else `resolution`."""
        kwargs = self.build_kwargs
        out = []
        for side in ("height", "width"):
            value = kwargs.get(side)
            if value is None:
                out.append(as_range(kwargs["resolution"], "resolution"))
            else:
                out.append(as_range(value, side))
        return out[0], out[1]

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

    def benchmark_sizes(self, specs=None) -> dict[str, int]:
        """Where `specs` (default: the build range) are timed and raced (job.benchmark_shape)."""
        if specs is None:
            check_benchmark_shape(self.specs(), self.benchmark_shape)
        return benchmark_sizes(self.specs() if specs is None else specs, self.benchmark_shape)

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
        for key in ("batch_size", "sequence_length"):
            if key in self.build_kwargs:
                out[{"batch_size": "batch"}.get(key, key)] = as_range(self.build_kwargs[key], key)
        if "resolution" in self.build_kwargs:
            height, width = self.pixel_ranges()
            if height == width:
                out["resolution"] = height
            else:
                out["height"], out["width"] = height, width
        return out

    def artifact_key(self) -> dict[str, Any]:
        """Everything that changes the compiled artifact; its hash is part of the name."""
        import torch

        from mlplatform.api import device_fingerprint

        fp = device_fingerprint(self.device)
        bench_sizes = self.benchmark_sizes()  # checked here, so refused before compiling
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
            # each profile is a package of its own; routing decides which of them may be eager
            "profiles": [p.to_json() for p in self.profiles()],
            "route_to_eager": self.route_to_eager,
            **(
                # backend=auto keeps the backend that wins at this shape, and routing sends the
                # ranged package to eager at this shape where it was slower there
                {"benchmark_shape": bench_sizes}
                if self.backend.name == "auto" or self.route_to_eager != "never" else {}
            ),
        }

    def artifact_name(self, digest: str) -> str:
        from mlplatform.api import device_fingerprint

        fields = naming.name_fields(
            device_fingerprint(self.device), self.dtype, self.label, self.model_type, self.ranges()
        )
        return naming.artifact_name(
            self.model_name,
            fields,
            self.backend.name,
            digest,
            self.source().random_weights,
            profiles=[p.name for p in self.profiles()],
        )

    # ---- the build -----------------------------------------------------------------------

    def __call__(self) -> BuildResult:
        from .pipeline import run_build

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
























__all__ = ["Build", "BuildResult", "default_cache_dir", "weights_fingerprint"]
