"""ONNX Runtime: the model exported with torch.export and `torch.onnx.export(dynamo=True)` (the
same dynamic ranges as aot_inductor), saved as `model.onnx` (+ `model.onnx.data` for the
weights) and run by an ONNX Runtime session on the CPU or CUDA execution provider.

A peer of AOTInductor on CPU: ONNX Runtime's graph optimisations (conv + activation fusion,
constant folding, its own NCHWc convolution kernels) were 1.34x faster than eager on the SD VAE
decoder where the ranged AOTInductor build was 0.99x (issue 10). It reloads from the two files
alone, without the model's Python class.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlplatform.api import ArtifactError, ConfigError, DeviceError

from ..schemas import OnnxRuntimeConfig
from .aot_inductor import export_program
from .base import COMPILE_COUNT, Backend, CompileRequest, missing_modules, versions_of

log = logging.getLogger(__name__)
MODEL_NAME = "model.onnx"
INSTALL_HINT = "pip install 'mlplatform-compile[onnx]' (onnxruntime, onnx, onnxscript)"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def missing_packages() -> list[str]:
    return missing_modules("onnxruntime", "onnx", "onnxscript")


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    description = "torch.onnx.export (dynamo) + ONNX Runtime (CPU / CUDA execution provider)"
    self_contained = True
    config_schema = OnnxRuntimeConfig

    def __init__(self, **options):
        super().__init__(**options)
        if self.options["graph_optimization"] not in OPTIMIZATION_LEVELS:
            raise ConfigError(
                f"backend.graph_optimization is {self.options['graph_optimization']!r}",
                f"pass one of: {', '.join(OPTIMIZATION_LEVELS)}",
            )
        if self.options["intra_op_threads"] < 0:
            raise ConfigError(
                f"backend.intra_op_threads is {self.options['intra_op_threads']}",
                "pass 0 (ONNX Runtime's default: one per physical core) or a positive count",
            )

    def version(self) -> str:
        return versions_of("onnxruntime", "onnxruntime-gpu", "onnxscript", "onnx")

    def check_available(self, device) -> None:
        missing = missing_packages()
        if missing:
            raise DeviceError(
                f"backend=onnxruntime cannot run here: {', '.join(missing)} not installed",
                INSTALL_HINT,
            )
        provider = self.provider_for(device)
        import onnxruntime

        if provider not in onnxruntime.get_available_providers():
            raise DeviceError(
                f"backend=onnxruntime cannot run on {device}: this onnxruntime has no {provider} "
                f"(it has {onnxruntime.get_available_providers()})",
                "pip install onnxruntime-gpu (instead of onnxruntime) for CUDA, or build on CPU",
            )

    @staticmethod
    def provider_for(device) -> str:
        return PROVIDERS.get(getattr(device, "type", str(device)), "CPUExecutionProvider")

    def compile(self, request: CompileRequest):
        COMPILE_COUNT["n"] += 1
        export_onnx(request, request.staging_dir / MODEL_NAME, self.options["optimize"])
        request.extra["onnx_files"] = sorted(p.name for p in request.staging_dir.iterdir())
        # verify what the user will load, not the in-memory program
        return self.load(request.staging_dir, {}, request.device, None)

    def session_options(self):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        level = {
            "disable": onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.options["graph_optimization"]]
        options.graph_optimization_level = level
        if self.options["intra_op_threads"]:
            options.intra_op_num_threads = self.options["intra_op_threads"]
        # no memory arena: the arena keeps the peak of every shape seen, the weights stay the
        # only large resident allocation (see docs/compile.md, memory)
        options.enable_cpu_mem_arena = self.options["cpu_mem_arena"]
        # ONNX Runtime's threads spin after each call by default, taking the cores from torch's
        # threads running beside it in the same process; spinning is opt-in
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if self.options["allow_spinning"] else "0"
        )
        return options

    def load(self, artifact_dir, manifest, device, rebuild):
        import torch

        self.check_available(torch.device(device))
        import onnxruntime

        path = Path(artifact_dir) / MODEL_NAME
        provider = self.provider_for(torch.device(device))
        try:
            session = onnxruntime.InferenceSession(
                str(path), sess_options=self.session_options(), providers=[provider]
            )
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph classes
            raise ArtifactError(
                f"ONNX Runtime could not load {path}: {type(exc).__name__}: {exc}",
                "rebuild the artifact (job.force=true)",
            ) from exc
        return SessionRunner(session, torch.device(device))


def export_onnx(request: CompileRequest, path: Path, optimize: bool = True) -> Path:
    """torch.export with the build's ranges (dynamic dims stay symbolic in the ONNX graph), then
    torch.onnx's dynamo exporter; the weights go to `<path>.data` (no 2 GB protobuf limit: the SD
    UNet is 3.4 GB in float32)."""
    import torch

    program = export_program(request, request.module)
    with torch.no_grad():
        onnx_program = torch.onnx.export(
            program,
            request.example_inputs,
            dynamo=True,
            input_names=[spec.name for spec in request.specs],
            optimize=optimize,
            verbose=False,
        )
    onnx_program.save(str(path), external_data=True)
    return path


class SessionRunner:
    """Positional tensors in, a tuple of tensors out, around an InferenceSession."""

    def __init__(self, session, device):
        self.session = session
        self.device = device
        self.input_names = [i.name for i in session.get_inputs()]

    def __call__(self, *inputs):
        import torch

        feed = {
            name: tensor.detach().to("cpu").contiguous().numpy()
            for name, tensor in zip(self.input_names, inputs, strict=True)
        }
        outputs = self.session.run(None, feed)
        return tuple(torch.from_numpy(out).to(self.device) for out in outputs)
