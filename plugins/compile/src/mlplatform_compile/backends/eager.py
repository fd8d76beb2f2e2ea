"""The eager backend: the reference. Its artifact is a manifest recording how to rebuild the model."""

from __future__ import annotations

from .base import Backend, CompileRequest


class EagerBackend(Backend):
    name = "eager"
    description = "plain PyTorch (the reference every compiled backend is checked against)"

    def compile(self, request: CompileRequest):
        return request.module

    def load(self, artifact_dir, manifest, device, rebuild):
        return rebuild()
