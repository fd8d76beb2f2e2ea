"""OpenVINO on CPU: the model exported to ONNX exactly as backend=onnxruntime does (dynamic dims
stay symbolic), converted with `openvino.convert_model`, saved as OpenVINO IR (`model.xml` +
`model.bin`, float32: no fp16 compression) and compiled for the CPU plugin at load, with
float32 inference precision (OpenVINO would otherwise pick bf16 on CPUs that have it).
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlplatform.api import ArtifactError, ConfigError, DeviceError

from ..schemas import OpenVINOConfig
from .base import COMPILE_COUNT, Backend, CompileRequest, missing_modules, versions_of
from .ort import export_onnx

log = logging.getLogger(__name__)
MODEL_XML = "model.xml"
ONNX_TEMP = "_export.onnx"
INSTALL_HINT = "pip install 'mlplatform-compile[openvino]' (openvino, onnx, onnxscript)"
HINTS = ("LATENCY", "THROUGHPUT")


class OpenVINOBackend(Backend):
    name = "openvino"
    description = "torch.onnx.export (dynamo) + OpenVINO IR on the CPU plugin (float32)"
    self_contained = True
    config_schema = OpenVINOConfig

    def __init__(self, **options):
        super().__init__(**options)
        if self.options["performance_hint"] not in HINTS:
            raise ConfigError(
                f"backend.performance_hint is {self.options['performance_hint']!r}",
                f"pass one of: {', '.join(HINTS)}",
            )
        if self.options["num_threads"] < 0:
            raise ConfigError(
                f"backend.num_threads is {self.options['num_threads']}",
                "pass 0 (OpenVINO's default) or a positive count",
            )

    def version(self) -> str:
        return versions_of("openvino", "onnxscript", "onnx")

    def check_available(self, device) -> None:
        missing = missing_modules("openvino", "onnx", "onnxscript")
        if missing:
            raise DeviceError(
                f"backend=openvino cannot run here: {', '.join(missing)} not installed",
                INSTALL_HINT,
            )
        if getattr(device, "type", str(device)) != "cpu":
            raise DeviceError(
                f"backend=openvino runs on CPU here, not on {device}",
                "build with device=cpu, or use backend=tensorrt / aot_inductor on CUDA",
            )

    def compile(self, request: CompileRequest):
        import openvino

        COMPILE_COUNT["n"] += 1
        onnx_path = export_onnx(request, request.staging_dir / ONNX_TEMP)
        model = openvino.convert_model(str(onnx_path))
        # float32 weights: save_model compresses to fp16 unless told not to
        openvino.save_model(model, str(request.staging_dir / MODEL_XML), compress_to_fp16=False)
        del model
        for path in request.staging_dir.glob(ONNX_TEMP + "*"):
            path.unlink()
        return self.load(request.staging_dir, {}, request.device, None)

    def load(self, artifact_dir, manifest, device, rebuild):
        import torch

        self.check_available(torch.device(device))
        import openvino

        path = Path(artifact_dir) / MODEL_XML
        config = {
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": self.options["performance_hint"],
        }
        if self.options["num_threads"]:
            config["INFERENCE_NUM_THREADS"] = self.options["num_threads"]
        from ..pages import mapped_files, release_new_library_pages

        before = mapped_files()
        try:
            compiled = openvino.Core().compile_model(str(path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise ArtifactError(
                f"OpenVINO could not load {path}: {type(exc).__name__}: {exc}",
                "rebuild the artifact (job.force=true)",
            ) from exc
        # OpenVINO maps model.bin and reads all of it while compiling; the CPU plugin then runs
        # from its own (repacked) copy of most weights, but the mapped pages stay resident: a
        # second copy (SD CLIP text: 847 MB at inference, 543 MB with them dropped; eager 574).
        # They are read-only and file-backed, so pages the plugin still uses are read back
        release_new_library_pages(before, suffix=".bin")
        return CompiledModelRunner(compiled)


class CompiledModelRunner:
    """Positional tensors in, a tuple of tensors out, around an OpenVINO CompiledModel."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def __call__(self, *inputs):
        import torch

        arrays = [tensor.detach().to("cpu").contiguous().numpy() for tensor in inputs]
        results = self.request.infer(arrays)
        # copies: the request reuses its output buffers on the next call
        return tuple(
            torch.from_numpy(results[output].copy()) for output in self.compiled.outputs
        )
