"""Loading artifacts: verify, check they fit this machine, and wrap them in an input-checking module.

AOTInductor runs whatever it is given (it does not check shapes), so `CompiledModule` checks names,
device, dtype, rank and every dimension against the compiled ranges before running, and raises an
error that says which input is wrong and what is allowed.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlplatform.api import ArtifactError, ConfigError, DeviceError, MLPlatformError

from .profiles import FALLBACK, PROFILES_DIR, matches
from .specs import Dim, all_dims, specs_from_json

log = logging.getLogger(__name__)


class InputError(MLPlatformError):
    """An input a compiled module was not built for (name, device, dtype or shape)."""


def check_manifest(
    artifact_dir: str | os.PathLike, expected_hash: str | None = None
) -> dict[str, Any]:
    """Checksums, kind, torch version and device fingerprint; ArtifactError on any mismatch."""
    import torch

    from mlplatform.api import verify_artifact

    from .build import ARTIFACT_KIND

    root = Path(artifact_dir)
    manifest = verify_artifact(root)
    fix = f"rebuild it (job.force=true) or delete {root}"
    if manifest.get("kind") != ARTIFACT_KIND:
        raise ArtifactError(
            f"{root} is not a compiled-module artifact (kind {manifest.get('kind')!r})", fix
        )
    if expected_hash is not None and manifest.get("key_hash") != expected_hash:
        raise ArtifactError(
            f"{root} was built from different inputs (key {manifest.get('key_hash')}, expected {expected_hash})",
            fix,
        )
    check_manifest_fields(manifest, root)
    built_with = manifest["versions"].get("torch")
    if built_with != torch.__version__:
        raise ArtifactError(
            f"{root} was built with torch {built_with}, this is torch {torch.__version__}; compiled "
            "artifacts only run on the torch version that built them",
            fix,
        )
    return manifest


# the fields loading and reporting read: a manifest without one of them is a corrupt artifact
MANIFEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "key_hash": str,
    "builder": str,
    "builder_args": dict,
    "model_source": dict,
    "weights_sha256": str,
    "backend": dict,
    "backend_extra": dict,
    "dtype": str,
    "device": dict,
    "versions": dict,
    "inputs": list,
    "output_names": list,
    "tolerance": (int, float),
    "parity": dict,
    "latency": dict,
}


def check_manifest_fields(manifest: dict[str, Any], root: Path) -> None:
    """Every field this loader reads, with its type, so a hand-edited or older manifest is an
    ArtifactError (rebuilt by build()) rather than a KeyError that blocks every later build."""
    from mlplatform.api import require_keys

    require_keys(manifest, MANIFEST_FIELDS, root)
    require_keys(manifest["backend"], {"name": str}, f"{root} (backend)")
    require_keys(manifest["device"], {"kind": str, "capability": str}, f"{root} (device)")
    try:
        specs_from_json(manifest["inputs"])
        check_profile_entries(manifest.get("profiles", []), root)
    except (KeyError, TypeError, ValueError, MLPlatformError) as exc:
        raise ArtifactError(
            f"the manifest of {root} has malformed inputs: {type(exc).__name__}: {exc}",
            f"rebuild it (job.force=true) or delete {root}",
        ) from exc


def check_profile_entries(entries: Any, root: Path) -> None:
    """Each profile names a package folder under profiles/ (a plain name, never a path)."""
    import re

    if not isinstance(entries, list):
        raise TypeError(f"profiles is a {type(entries).__name__}, not a list")
    for entry in entries:
        name = entry["name"]
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_\-]+", name):
            raise ValueError(f"profile name {name!r} is not a plain name")
        if entry["route"]["use"] not in ("compiled", "fallback", "eager"):
            raise ValueError(f"profile {name!r} has route {entry['route']!r}")
        specs_from_json(entry["inputs"])


def _device_for(manifest: dict[str, Any], device: Any):
    import torch

    from mlplatform.api import device_fingerprint

    built = manifest["device"]
    if device is None:
        if built["kind"] == "cuda" and not torch.cuda.is_available():
            raise DeviceError(
                f"this artifact was built for CUDA ({built.get('name')}, {built.get('capability')}) "
                "and no CUDA device is available",
                "load it on a CUDA machine, or rebuild with device=cpu",
            )
        device = torch.device(built["kind"])
    device = torch.device(device)
    current = device_fingerprint(device)
    if current["kind"] != built["kind"] or current["capability"] != built["capability"]:
        raise ArtifactError(
            f"artifact built for {built['kind']} {built['capability']} cannot run on "
            f"{current['kind']} {current['capability']}",
            "rebuild it on this machine (artifacts are tied to device kind, CPU ISA / CUDA capability)",
        )
    return device


def load_module(
    path: str | os.PathLike,
    device: Any = None,
    builder: Any = None,
    *,
    routing: str = "manifest",
) -> CompiledModule:
    """Load an artifact directory (or its manifest.json / model file) as a CompiledModule.

    Shape profiles, and the ranged fallback of an artifact that has profiles, load on first use:
    only the packages the inputs need take memory. `routing="compiled"` ignores the build's
    decisions to run a slower profile on the fallback or eager, or the ranged fallback's lost
    benchmark shape on eager (job.route_to_eager), and loads every compiled package (benchmarks).
    """
    if routing not in ("manifest", "compiled"):
        raise ConfigError(f"routing is {routing!r}", "pass routing='manifest' or 'compiled'")
    root = Path(path)
    if root.is_file():
        root = root.parent
    manifest = check_manifest(root)
    device = _device_for(manifest, device)
    backend = _backend_for(manifest, builder)
    eager: list[Any] = []

    def rebuild():
        if eager:  # one eager model, shared by every package routed to it
            return eager[0]
        eager_builder = builder or _builder_from_manifest(manifest, device)
        if eager_builder.weights_fingerprint() != manifest["weights_sha256"]:
            raise ArtifactError(
                f"the model weights at {manifest['model_source']['hf_hub']} changed since {root} was built",
                "rebuild the artifact (job.force=true)",
            )
        eager.append(eager_builder.forward_module())
        return eager[0]

    def package(folder: Path, package_manifest: dict[str, Any], route: Mapping[str, Any]):
        if route.get("use") == "eager" and routing == "manifest":
            return rebuild()
        return backend.load(folder, package_manifest, device, rebuild)

    load_fallback = functools.partial(package, root, manifest, manifest.get("fallback_route") or {})
    # with profiles, the fallback loads on first use too: an input that a profile serves must not
    # hold a second copy of the weights (the ranged package) in memory. Without profiles the
    # package loads now, so a package the backend cannot load fails here, not at the first call
    runner = LazyRunner(load_fallback) if manifest.get("profiles") else load_fallback()

    def profile(entry):
        if entry["route"].get("use") == "fallback" and routing == "manifest":
            return runner  # the ranged package was faster at the profile's shape
        return LazyRunner(
            functools.partial(
                package,
                root / PROFILES_DIR / entry["name"],
                {**manifest, "inputs": entry["inputs"], "backend_extra": entry["backend_extra"]},
                entry["route"],
            )
        )

    profiles = {entry["name"]: profile(entry) for entry in manifest.get("profiles") or []}
    if manifest.get("random_weights"):
        log.warning("%s: %s", root.name, manifest.get("warning", "random weights"))
    # shapes where the ranged package was slower than eager run eager (loaded on first use)
    eager_runner = LazyRunner(rebuild) if routing == "manifest" else None
    return CompiledModule(runner, manifest, device, root, profiles, eager_runner)


class LazyRunner:
    """A runner loaded on its first call: profiles a process never sees cost no memory."""

    def __init__(self, load):
        self._load = load
        self._runner = None

    @property
    def loaded(self) -> bool:
        return self._runner is not None

    def get(self):
        if self._runner is None:
            self._runner = self._load()
        return self._runner

    def __call__(self, *inputs):
        return self.get()(*inputs)


def loaded_packages(module: CompiledModule) -> list[str]:
    """The packages of `module` that are in memory now (a profile's name, or "fallback")."""
    runners = [(FALLBACK, module.runner)] + [
        (name, r) for name, _dims, r in module.profiles if r is not module.runner  # routed there
    ]
    return [name for name, r in runners if not isinstance(r, LazyRunner) or r.loaded]


def _backend_for(manifest: dict[str, Any], builder: Any):
    """The backend that built the artifact: the builder's own instance when it is that backend
    (a custom Backend object need not be registered), else a registered one with its options."""
    from mlplatform.api import get_registry

    info = manifest["backend"]
    own = getattr(builder, "backend", None)
    if own is not None and own.name == info["name"] and own.options == info.get("options"):
        return own
    try:
        return get_registry().get("backend", info["name"])(**info.get("options", {}))
    except ConfigError as exc:  # options an older plugin version wrote
        raise ArtifactError(
            f"the manifest's options for backend {info['name']!r} are not valid now: {exc.problem}",
            "rebuild the artifact (job.force=true)",
        ) from exc


def _builder_from_manifest(manifest: dict[str, Any], device):
    from mlplatform.api import get_registry

    cls = get_registry().get("builder", manifest["builder"])
    args = dict(manifest["builder_args"])
    return cls(device=str(device), backend="eager", **args)


class CompiledModule:
    """Named inputs -> named outputs (`model_output_names`), with every input checked first."""

    def __init__(
        self,
        runner,
        manifest: dict[str, Any],
        device,
        artifact_dir: Path | None = None,
        profile_runners: Mapping[str, Any] | None = None,
        eager_runner: Any = None,
    ):
        import torch

        self.runner = runner
        fallback_route = manifest.get("fallback_route") or {}
        # the sizes at which the build timed the ranged package slower than eager: they run eager
        # (job.route_to_eager=profiles); without an eager runner (routing="compiled") they do not
        self.eager_runner = eager_runner
        self.eager_at = [dict(s) for s in fallback_route.get("eager_at", [])] if eager_runner else []
        runners = dict(profile_runners or {})
        # (name, dims, runner) in the order the build listed them: the first match wins
        self.profiles = [
            (entry["name"], all_dims(specs_from_json(entry["inputs"])), runners[entry["name"]])
            for entry in manifest.get("profiles") or []
        ]
        self.routes = {FALLBACK: fallback_route.get("use", "compiled")}
        self.routes.update({e["name"]: e["route"]["use"] for e in manifest.get("profiles") or []})
        # which package served the last call: a profile's name or "fallback", and what ran it
        # ("compiled", "fallback" or "eager", as routed)
        self.last_profile: str | None = None
        self.last_route: str | None = None
        self.manifest = manifest
        self.device = torch.device(device)
        self.artifact_dir = artifact_dir
        self.specs = specs_from_json(manifest["inputs"])
        self.input_names = [s.name for s in self.specs]
        self.output_names = list(manifest["output_names"])
        self.dtype = getattr(torch, manifest["dtype"])
        self.random_weights = bool(manifest.get("random_weights"))

    def __repr__(self) -> str:
        dims = ", ".join(f"{s.name}{self._shape_text(s)}" for s in self.specs)
        tag = " RANDOM WEIGHTS" if self.random_weights else ""
        packages = [f"{name} ({self.routes[name]})" for name, _dims, _runner in self.profiles]
        eager_at = "".join(
            f"; eager at {', '.join(f'{k}={v}' for k, v in sizes.items())}" for sizes in self.eager_at
        )
        packages.append(f"{FALLBACK} ({self.routes[FALLBACK]}{eager_at})")
        return (
            f"CompiledModule({self.manifest.get('name')}: {dims} -> {self.output_names}; "
            f"profiles: {', '.join(packages)}{tag})"
        )

    def profile_for(self, sizes: Mapping[str, int]) -> str:
        """The package that runs inputs of these sizes ({dim name: size}): the first profile whose
        ranges hold them, else the ranged fallback."""
        for name, dims, _runner in self.profiles:
            if matches(dims, sizes):
                return name
        return FALLBACK

    def package(self, name: str):
        """The runner of one package (a profile's name, or "fallback"), loaded if need be."""
        if name == FALLBACK:
            return self.runner.get() if isinstance(self.runner, LazyRunner) else self.runner
        for profile, _dims, runner in self.profiles:
            if profile == name:
                return runner.get() if isinstance(runner, LazyRunner) else runner
        known = [p for p, _d, _r in self.profiles] + [FALLBACK]
        raise ConfigError(f"no package named {name!r}", f"use one of: {', '.join(known)}")

    @staticmethod
    def _shape_text(spec) -> str:
        return (
            "["
            + ", ".join(
                f"{d.name}={d.describe()}" if isinstance(d, Dim) else str(d) for d in spec.shape
            )
            + "]"
        )

    def check_inputs(self, given: Mapping[str, Any]) -> list[Any]:
        return self._checked(given)[0]

    def _checked(self, given: Mapping[str, Any]) -> tuple[list[Any], dict[str, int]]:
        """The inputs in order, checked, and the size of every named dimension."""
        import torch

        missing = [n for n in self.input_names if n not in given]
        unknown = [n for n in given if n not in self.input_names]
        if missing or unknown:
            raise InputError(
                f"inputs {sorted(given)} do not match the compiled inputs {self.input_names}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unexpected {unknown})" if unknown else ""),
                f"call it with exactly: {', '.join(self.input_names)}",
            )
        bound: dict[str, tuple[int, str]] = {}
        ordered = []
        for spec in self.specs:
            tensor = given[spec.name]
            if not isinstance(tensor, torch.Tensor):
                raise InputError(
                    f"input {spec.name!r} is a {type(tensor).__name__}, not a tensor",
                    "pass a torch.Tensor",
                )
            want_dtype = torch.int64 if spec.dtype == "long" else self.dtype
            if tensor.dtype != want_dtype:
                raise InputError(
                    f"input {spec.name!r} has dtype {tensor.dtype}, the module was compiled for {want_dtype}",
                    f"convert it first: {spec.name}.to({want_dtype})",
                )
            if tensor.device.type != self.device.type or (
                self.device.index is not None and tensor.device.index != self.device.index
            ):
                raise InputError(
                    f"input {spec.name!r} is on {tensor.device}, the module runs on {self.device}",
                    f"move it first: {spec.name}.to({str(self.device)!r})",
                )
            if tensor.dim() != len(spec.shape):
                raise InputError(
                    f"input {spec.name!r} has {tensor.dim()} dimensions {tuple(tensor.shape)}, "
                    f"expected {len(spec.shape)}: {self._shape_text(spec)}",
                    "reshape the input",
                )
            for axis, (size, want) in enumerate(zip(tensor.shape, spec.shape, strict=True)):
                if isinstance(want, int):
                    if size != want:
                        raise InputError(
                            f"input {spec.name!r} axis {axis} is {size}, compiled for exactly {want} "
                            f"(shape {self._shape_text(spec)})",
                            "rebuild with a range that includes it",
                        )
                    continue
                if not want.contains(size):
                    raise InputError(
                        f"input {spec.name!r} axis {axis} ({want.name}) is {size}, outside the compiled "
                        f"range {want.describe()}; AOT-compiled code would run it silently and wrongly",
                        f"use {want.name} in {want.describe()}, or rebuild with build_kwargs covering it",
                    )
                first = bound.setdefault(want.name, (size, spec.name))
                if first[0] != size:
                    raise InputError(
                        f"{want.name} is {first[0]} in {first[1]!r} but {size} in {spec.name!r}",
                        f"all inputs must agree on {want.name}",
                    )
            ordered.append(tensor.contiguous())
        return ordered, {name: size for name, (size, _input) in bound.items()}

    def __call__(self, inputs: Mapping[str, Any] | None = None, /, **named) -> dict[str, Any]:
        import torch

        args, sizes = self._checked({**(inputs or {}), **named})
        self.last_profile = self.profile_for(sizes)
        self.last_route = self.routes[self.last_profile]
        if self.last_profile == FALLBACK and sizes in self.eager_at:
            self.last_route = "eager"
            runner = self.eager_runner.get() if isinstance(self.eager_runner, LazyRunner) else self.eager_runner
        else:
            runner = self.package(self.last_profile)
        with torch.no_grad():
            outputs = runner(*args)
        from .parity import pair_outputs

        where = self.artifact_dir or self.manifest.get("name")
        return pair_outputs(
            self.output_names,
            outputs,
            f"the compiled module {where} does not match its manifest: it",
            fix=f"rebuild it (job.force=true) or delete {where}",
        )
