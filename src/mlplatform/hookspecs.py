"""The whole extension surface of mlplatform, on one page.

Each hook receives a `registry` (a `mlplatform.registry.Registrar`) that records which
distribution registered each name. An implementation may take fewer arguments than its spec.
"""

from __future__ import annotations

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("mlplatform")
hookimpl = HookimplMarker("mlplatform")


@hookspec
def register_jobs(registry):
    """Add jobs selectable with `job=NAME`: registry.add_job(name, run, description)."""


@hookspec
def register_config_groups(registry):
    """Add a package of Hydra config groups: registry.add_config_package("pkg.conf"), and the
    schema of each option: registry.add_config_schema(group, name, DataclassType)."""


@hookspec
def register_builders(registry):
    """Add compile builders: registry.add("builder", name, builder_class)."""


@hookspec
def register_compile_backends(registry):
    """Add compile backends: registry.add("backend", name, backend_class)."""


@hookspec
def register_model_managers(registry):
    """Add model managers and their tasks: registry.add("manager" | "task", name, obj)."""


@hookspec
def register_trainers(registry):
    """Add trainers selectable with `trainer=NAME` in `job=train`: registry.add("trainer", name, run)."""


@hookspec
def register_text_diffusion_components(registry):
    """Add text-diffusion parts: registry.add(kind, name, obj) for kind in
    vae_encoder, vae_decoder, eps_model, noise_schedule, sampler."""


@hookspec
def register_components(registry):
    """Add components of any other kind, including kinds a plugin defines for itself:
    registry.add(kind, name, obj)."""
