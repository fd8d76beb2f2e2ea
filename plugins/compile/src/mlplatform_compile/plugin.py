"""The mlplatform entry point: registers builders, backends, the `build` job and the config groups.

Imports stay light here (no torch) so listing plugins is fast; heavy modules load on first use.
"""

from __future__ import annotations

from mlplatform.api import hookimpl


@hookimpl
def register_builders(registry):
    from .builders import BUILDERS

    for name, cls in BUILDERS.items():
        doc = (cls.__doc__ or "").strip()
        registry.add("builder", name, cls, description=doc.splitlines()[0] if doc else name)


def _backend_classes():
    from .backends.aitemplate import AITemplateBackend
    from .backends.aot_inductor import AOTInductorBackend
    from .backends.auto import AutoBackend
    from .backends.eager import EagerBackend
    from .backends.inductor import InductorBackend
    from .backends.ort import OnnxRuntimeBackend
    from .backends.ov import OpenVINOBackend
    from .backends.trt import TensorRTBackend

    return (
        EagerBackend,
        InductorBackend,
        AOTInductorBackend,
        OnnxRuntimeBackend,
        OpenVINOBackend,
        TensorRTBackend,
        AITemplateBackend,
        AutoBackend,
    )


@hookimpl
def register_compile_backends(registry):
    for cls in _backend_classes():
        registry.add("backend", cls.name, cls, description=cls.description)


@hookimpl
def register_jobs(registry):
    from .job import run_build_job

    registry.add_job(
        "build", run_build_job, "compile a model with a builder and a backend (builder=, backend=)"
    )


@hookimpl
def register_config_groups(registry):
    from .builders import BUILDERS
    from .schemas import BuildJobConfig

    registry.add_config_package("mlplatform_compile.conf")
    # every option's YAML names its schema first in its defaults list
    registry.add_config_schema("job", "build", BuildJobConfig)
    for name, cls in BUILDERS.items():
        registry.add_config_schema("builder", name, cls.config_schema)
    for cls in _backend_classes():
        registry.add_config_schema("backend", cls.name, cls.config_schema)
