"""The Python entry points: build a registered builder, load an artifact, make an eager model."""

from __future__ import annotations

from typing import Any

# importing the submodule `build` here, before the package binds the function `build` below to
# the same name, keeps `mlplatform_compile.build` the function
from .build import Build
from .modules import BuildResult


def builder_class(name: str) -> type[Build]:
    from mlplatform.api import get_registry

    return get_registry().get("builder", name)


def build(builder: str, backend: Any = "aot_inductor", **kwargs: Any) -> BuildResult:
    """Build (or reuse) an artifact: `build("vae_decode", "aot_inductor", hf_hub=..., ...)`.

    kwargs are the builder's constructor arguments (hf_hub, label, dtype, device, build_kwargs,
    model_kwargs, backend_options, random_weights, seed, cache_dir, force, verify, tolerance,
    benchmark_runs, route_to_eager, benchmark_shape).
    """
    return builder_class(builder)(backend=backend, **kwargs)()


def eager_model(builder: str, shipped_config: str, *, seed: int = 0, **kwargs: Any):
    """(builder, eager nn.Module) for a shipped config with random weights, e.g. ('vae_decode',
    'sd15_vae'); the builder gives `forward_module()`, `example_inputs(shape)`, `specs()`."""
    instance = builder_class(builder)(
        hf_hub=f"builtin:{shipped_config}",
        random_weights=True,
        seed=seed,
        backend="eager",
        **kwargs,
    )
    return instance, instance.load_eager()
