"""The callables a build hands out: the positional module backends compile, the named-input
wrapper around eager or compiled runners, and the BuildResult that carries them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.api import MLPlatformError

from . import parity
from .specs import InputSpec

if TYPE_CHECKING:
    from .build import Build


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

