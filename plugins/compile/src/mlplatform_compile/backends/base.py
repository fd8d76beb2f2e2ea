"""What a compile backend does: turn a module with named tensor inputs into a callable, write what
it needs into the artifact directory, and load it back later."""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlplatform.api import from_options

from ..schemas import BackendConfig
from ..specs import InputSpec

# counts real compilations in this process; tests use it to prove a cached build did not recompile
COMPILE_COUNT = {"n": 0}



def versions_of(*distributions: str) -> str:
    """"torch X, dist Y, ..." for the distributions installed here: what a backend's artifacts
    depend on, for the artifact key (a missing one is left out, not an error)."""
    import torch

    versions = [f"torch {torch.__version__}"]
    for dist in distributions:
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(versions)


def missing_modules(*modules: str) -> list[str]:
    """The modules of `modules` that cannot be imported here, for a backend's check_available."""
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    return missing


# a compiled callable takes the inputs positionally (in InputSpec order) and returns a tuple
Runner = Callable[..., Sequence[Any]]


@dataclass
class RaceSettings:
    """What a backend that races others (backend=auto) needs from the build: inputs at the
    verification shapes, the tolerance, how many timed runs, and the shape to time them at (the
    build's benchmark shape, job.benchmark_shape; a profile's own shape for a profile)."""

    make_inputs: Callable[..., tuple[Any, ...]]
    shape_sets: list[Any]
    tolerance: float
    runs: int
    output_names: tuple[str, ...]
    sizes: dict[str, int] = field(default_factory=dict)


@dataclass
class CompileRequest:
    """Everything a backend needs: the module, its inputs and where to write files."""

    module: Any  # torch.nn.Module whose forward takes the inputs positionally, returns a tuple
    specs: list[InputSpec]
    example_inputs: tuple[Any, ...]
    device: Any
    dtype: str
    staging_dir: Path  # files written here become the artifact
    cache_dir: Path  # shared, persistent compiler cache (e.g. inductor's)
    extra: dict[str, Any] = field(default_factory=dict)
    race: RaceSettings | None = None


class Backend:
    """Base class. Options come from the backend's config group (backend/NAME.yaml) and are
    checked against `config_schema`, from the command line and from Python alike."""

    name = "base"
    description = ""
    # True when the artifact runs without the model's Python class (AOTInductor, AITemplate)
    self_contained = False
    # the typed options of backend/<name>.yaml (a dataclass extending BackendConfig)
    config_schema: type = BackendConfig

    def __init__(self, **options: Any):
        self.settings = from_options(
            self.config_schema, {**options, "name": self.name}, f"backend {self.name}"
        )
        self.options = {
            key: value for key, value in vars(self.settings).items() if key != "name"
        }

    def version(self) -> str:
        import torch

        return torch.__version__

    def key(self) -> dict[str, Any]:
        """What about this backend changes the artifact (goes into the artifact hash)."""
        return {"name": self.name, "version": self.version(), "options": self.options}

    def check_available(self, device: Any) -> None:
        """Raise an MLPlatformError saying what is missing when this backend cannot run here."""

    def compile(self, request: CompileRequest) -> Runner:
        raise NotImplementedError

    def load(
        self, artifact_dir: Path, manifest: dict[str, Any], device: Any, rebuild: Callable[[], Any]
    ) -> Runner:
        """Load a saved artifact. `rebuild()` returns the eager module for backends that need it."""
        raise NotImplementedError
