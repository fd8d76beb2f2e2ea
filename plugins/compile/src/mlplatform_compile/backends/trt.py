"""TensorRT through torch-tensorrt (CUDA only): the model exported with the build's ranges, compiled
by `torch_tensorrt.dynamo.compile` with one optimization profile (min / opt / max shapes from the
ranges, opt at the largest) and saved as an ExportedProgram (`model.ep`) that reloads without the
model's Python class (torch_tensorrt must be importable: its runtime ops run the engines).

Status: written against torch-tensorrt's documented API (`torch_tensorrt.Input(min_shape=...,
opt_shape=..., max_shape=...)`, `dynamo.compile`, `torch_tensorrt.save(...,
output_format="exported_program")`); it runs only on a CUDA machine, in the GPU CI job
(.github/workflows/gpu.yml). Without CUDA or torch-tensorrt, `check_available` refuses it with
the reason, and its tests are skipped with that reason.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from pathlib import Path

from mlplatform.api import ArtifactError, ConfigError, DeviceError

from ..schemas import TensorRTConfig
from ..specs import all_dims, concrete_shape
from .aot_inductor import export_program
from .base import COMPILE_COUNT, Backend, CompileRequest, versions_of

log = logging.getLogger(__name__)
PROGRAM_NAME = "model.ep"
INSTALL_HINT = (
    "on a CUDA machine: pip install torch-tensorrt (the release matching your torch); "
    "on CPU use backend=onnxruntime, openvino or aot_inductor"
)
PRECISIONS = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def unavailable_reason(device) -> str | None:
    """Why TensorRT cannot build here, or None."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return f"TensorRT builds engines for CUDA GPUs only, and this build is on {device}"
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    try:
        importlib.import_module("torch_tensorrt")
    except ImportError as exc:
        return f"torch_tensorrt is not importable ({exc})"
    return None


class TensorRTBackend(Backend):
    name = "tensorrt"
    description = "torch-tensorrt (TensorRT engines with one optimization profile), CUDA only"
    self_contained = True
    config_schema = TensorRTConfig

    def __init__(self, **options):
        super().__init__(**options)
        unknown = [p for p in self.options["enabled_precisions"] if p not in PRECISIONS]
        if unknown:
            raise ConfigError(
                f"backend.enabled_precisions has {unknown}", f"use some of {sorted(PRECISIONS)}"
            )
        if not 0 <= self.options["optimization_level"] <= 5:
            raise ConfigError(
                f"backend.optimization_level is {self.options['optimization_level']}",
                "pass 0..5",
            )

    def version(self) -> str:
        return versions_of("torch-tensorrt", "tensorrt")

    def check_available(self, device) -> None:
        reason = unavailable_reason(device)
        if reason:
            raise DeviceError(f"backend=tensorrt cannot run here: {reason}", INSTALL_HINT)

    def trt_inputs(self, request: CompileRequest):
        """One torch_tensorrt.Input per input: min, opt (the largest) and max shapes."""
        import torch
        import torch_tensorrt

        dims = all_dims(request.specs)
        low = {name: dim.min for name, dim in dims.items()}
        high = {name: dim.max for name, dim in dims.items()}
        inputs = []
        for spec, example in zip(request.specs, request.example_inputs, strict=True):
            dtype = torch.int64 if spec.dtype == "long" else example.dtype
            inputs.append(
                torch_tensorrt.Input(
                    min_shape=concrete_shape(spec, low),
                    opt_shape=concrete_shape(spec, high),
                    max_shape=concrete_shape(spec, high),
                    dtype=dtype,
                )
            )
        return inputs

    def compile(self, request: CompileRequest):
        import torch
        import torch_tensorrt

        COMPILE_COUNT["n"] += 1
        self.check_available(request.device)
        program = export_program(request, request.module)
        precisions = {getattr(torch, PRECISIONS[request.dtype])}
        precisions |= {getattr(torch, PRECISIONS[p]) for p in self.options["enabled_precisions"]}
        settings = {
            "inputs": self.trt_inputs(request),
            "enabled_precisions": precisions,
            "optimization_level": self.options["optimization_level"],
        }
        if self.options["workspace_mb"]:
            settings["workspace_size"] = self.options["workspace_mb"] << 20
        with torch.no_grad():
            compiled = torch_tensorrt.dynamo.compile(program, **settings)
            torch_tensorrt.save(
                compiled,
                str(request.staging_dir / PROGRAM_NAME),
                output_format="exported_program",
                inputs=list(request.example_inputs),
            )
        del compiled, program
        return self.load(request.staging_dir, {}, request.device, None)

    def load(self, artifact_dir, manifest, device, rebuild):
        import torch

        self.check_available(torch.device(device))
        import torch_tensorrt  # noqa: F401 - registers the TensorRT runtime ops the program calls

        path = Path(artifact_dir) / PROGRAM_NAME
        try:
            module = torch.export.load(str(path)).module()
        except Exception as exc:
            raise ArtifactError(
                f"torch-tensorrt could not load {path}: {type(exc).__name__}: {exc}",
                "rebuild the artifact on this GPU (job.force=true)",
            ) from exc

        def run(*inputs):
            out = module(*inputs)
            return tuple(out) if isinstance(out, (tuple, list)) else (out,)

        return run
