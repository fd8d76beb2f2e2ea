"""AOTInductor: torch.export with dynamic shapes from the build ranges, compiled ahead of time
into a self-contained `.pt2` package that reloads without the model's Python class.

Before export, wide 3x3 convolutions may be rewritten as Winograd F(4x4, 3x3) (`winograd` option,
see winograd.py); the rewritten graph is what gets verified against the untouched eager model.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlplatform.api import ArtifactError, ConfigError

from ..schemas import AOTInductorConfig
from ..specs import export_dynamic_shapes
from ..winograd import describe, parse_policy, rewrite_convolutions
from .base import COMPILE_COUNT, Backend, CompileRequest
from .inductor import use_cache_dir

log = logging.getLogger(__name__)
PACKAGE_NAME = "model.pt2"


class AOTInductorBackend(Backend):
    name = "aot_inductor"
    description = (
        "torch.export + AOTInductor, packaged as a .pt2 that loads without Python model code"
    )
    self_contained = True

    config_schema = AOTInductorConfig

    def __init__(self, **options):
        super().__init__(**options)
        self.options["winograd"] = parse_policy(self.options["winograd"])

    def inductor_configs(self) -> dict:
        configs = {
            "freezing": self.options["freezing"],
            "max_autotune": self.options["max_autotune"],
        }
        configs.update(self.options["inductor_configs"])
        return configs

    def export(self, request: CompileRequest, module):
        return export_program(request, module)

    def export_with_winograd(self, request: CompileRequest):
        """Export the module with the Winograd layers the policy picks; if torch.export cannot
        keep the dynamic ranges with them (a layer that may see a single 4x4 tile), export the
        untouched module instead and record why."""
        module, choices = rewrite_convolutions(
            request.module, self.options["winograd"], request.example_inputs, request.device
        )
        if choices:
            request.extra["winograd_layers"] = describe(choices)
        if module is request.module:
            return self.export(request, module)
        try:
            return self.export(request, module)
        except Exception as exc:  # an optimisation: any failure falls back to the plain model
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
            log.warning("torch.export failed with Winograd layers, exporting without: %s", reason)
            request.extra["winograd_layers"] = []
            request.extra["winograd_fallback"] = reason
            return self.export(request, request.module)

    def compile(self, request: CompileRequest):
        import torch

        COMPILE_COUNT["n"] += 1
        use_cache_dir(request.cache_dir)
        program = self.export_with_winograd(request)
        log.info("exported graph; range constraints: %s", program.range_constraints)
        configs = self.inductor_configs()
        layers = request.extra.get("winograd_layers", [])
        if configs["freezing"] and any(layer["winograd"] for layer in layers):
            # freezing miscompiles the rewritten SD VAE decoder (relative error 0.8; without
            # freezing 1e-5): see docs/compile.md
            log.warning("compiling without freezing: it miscompiles Winograd layers in deep decoders")
            configs["freezing"] = False
            request.extra["freezing_off_for_winograd"] = True
        package = request.staging_dir / PACKAGE_NAME
        # inductor applies freezing (prepacked, fused oneDNN kernels) only with grad disabled
        with torch.no_grad():
            torch._inductor.aoti_compile_and_package(
                program, package_path=str(package), inductor_configs=configs
            )
        # verify what the user will load, not the in-memory program
        return self._load_package(package, request.device)

    def _load_package(self, package: Path, device):
        import torch

        index = (
            device.index
            if getattr(device, "type", "cpu") == "cuda" and device.index is not None
            else -1
        )
        from ..pages import mapped_files, release_new_library_pages

        before = mapped_files()
        try:
            runner = torch._inductor.aoti_load_package(str(package), device_index=index)
        except Exception as exc:
            raise ArtifactError(
                f"AOTInductor could not load {package}: {type(exc).__name__}: {exc}",
                "rebuild the artifact with this torch version (job.force=true)",
            ) from exc
        # the weights were copied out of the .so into the runner's own blob: its pages of them
        # are a second, unused copy in RSS (see pages.py)
        release_new_library_pages(before)
        return runner

    def load(self, artifact_dir, manifest, device, rebuild):
        return self._load_package(Path(artifact_dir) / PACKAGE_NAME, device)


def export_program(request: CompileRequest, module):
    """torch.export with the build's dynamic ranges; a range torch cannot keep is a ConfigError
    that names it (shared by every backend that starts from an ExportedProgram)."""
    import torch

    by_name = export_dynamic_shapes(request.specs)
    # the wrapped forward takes `*inputs`, so the spec is one tuple for that varargs parameter
    dynamic = (tuple(by_name[spec.name] for spec in request.specs),)
    try:
        with torch.no_grad():
            return torch.export.export(
                module, request.example_inputs, dynamic_shapes=dynamic, strict=False
            )
    except Exception as exc:  # torch raises several classes for constraint violations
        name = type(exc).__name__
        if "Constraint" in name or "Guard" in name or "specializ" in str(exc).lower():
            raise ConfigError(
                f"torch.export cannot keep the requested dynamic ranges for this model: {exc}",
                "narrow build_kwargs (the message above names the range torch can support), "
                "or make the dimension static",
            ) from exc
        raise
