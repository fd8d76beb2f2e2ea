"""AITemplate through fx2ait (facebookincubator/AITemplate): CUDA-only, source-built installs only.

Status: written against AITemplate's public API (fx2ait's `acc_tracer.trace`, `AITInterpreter`,
`TensorSpec` with `IntVar`/`IntImm` dims, `torch.classes.ait.AITModel`); it can only be verified
on a GPU runner with a source-built AITemplate + fx2ait, and has not been exercised on CPU-only CI.
Before anything runs, `check_available` says exactly what is missing: a real AITemplate (the PyPI
name `aitemplate` is an unrelated 2018 placeholder, which is detected and refused), fx2ait and
its `AITModel` torch class, a CUDA device, and nvcc.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import shutil
from pathlib import Path

from mlplatform.api import DeviceError

from ..schemas import AITemplateConfig
from .base import COMPILE_COUNT, Backend, CompileRequest

log = logging.getLogger(__name__)
LIBRARY_NAME = "model.so"
INSTALL_HINT = (
    "build AITemplate from source on a CUDA machine (git clone --recursive "
    "https://github.com/facebookincubator/AITemplate; cd python && python setup.py bdist_wheel && "
    "pip install dist/*.whl; then pip install ./fx2ait), never `pip install aitemplate` (an "
    "unrelated placeholder); or use backend=aot_inductor, which works on CPU and GPU"
)


def detect() -> list[str]:
    """What is missing for the AITemplate backend here (empty when everything is present)."""
    missing: list[str] = []
    try:
        ait = importlib.import_module("aitemplate")
    except ImportError:
        missing.append("the `aitemplate` package is not importable (no source-built AITemplate)")
    else:
        try:
            compiler = importlib.import_module("aitemplate.compiler")
            if not hasattr(compiler, "compile_model"):
                raise ImportError("no compile_model")
        except ImportError:
            version = "?"
            try:
                version = importlib.metadata.version("aitemplate")
            except importlib.metadata.PackageNotFoundError:
                pass
            missing.append(
                f"the installed `aitemplate` ({getattr(ait, '__file__', '?')}, version {version}) "
                "is not Meta's AITemplate (it has no aitemplate.compiler.compile_model); it is "
                "probably the unrelated PyPI placeholder: pip uninstall aitemplate"
            )
    try:
        importlib.import_module("fx2ait.fx2ait")
    except ImportError:
        missing.append(
            "fx2ait (AITemplate's torch.fx front end, in AITemplate/fx2ait) is not importable"
        )
    try:
        import torch

        if not torch.cuda.is_available():
            missing.append("no CUDA device is available (AITemplate generates CUDA kernels only)")
    except ImportError:
        missing.append("torch is not installed")
    if shutil.which("nvcc") is None:
        missing.append("nvcc (the CUDA compiler) is not on PATH")
    return missing


class AITemplateBackend(Backend):
    name = "aitemplate"
    description = (
        "AITemplate via fx2ait (CUDA + source-built AITemplate only; verified only on GPU runners)"
    )
    self_contained = True

    config_schema = AITemplateConfig

    def version(self) -> str:
        try:
            import aitemplate

            return str(getattr(aitemplate, "__version__", "source"))
        except ImportError:
            return "absent"

    def check_available(self, device) -> None:
        missing = detect()
        if getattr(device, "type", "cpu") != "cuda" and not any(
            "CUDA device" in m for m in missing
        ):
            missing.append(f"the build device is {device}, AITemplate needs device=cuda")
        if missing:
            raise DeviceError(
                "backend=aitemplate cannot run here: " + "; ".join(missing), INSTALL_HINT
            )

    # AITemplate's convolutions are NHWC: 4-D inputs go in channels-last, 4-D outputs come back so
    def _permute_in(self, tensors):
        if not self.options["channels_last_io"]:
            return list(tensors)
        return [t.permute(0, 2, 3, 1).contiguous() if t.dim() == 4 else t for t in tensors]

    def _permute_out(self, tensors):
        if not self.options["channels_last_io"]:
            return tuple(tensors)
        return tuple(t.permute(0, 3, 1, 2) if t.dim() == 4 else t for t in tensors)

    def _tensor_specs(self, request: CompileRequest):
        from aitemplate.compiler.public import IntImm, IntVar
        from fx2ait.tensor_spec import TensorSpec

        specs = []
        for spec, example in zip(request.specs, request.example_inputs, strict=True):
            dims = []
            for size in spec.shape:
                if isinstance(size, int):
                    dims.append(IntImm(size))
                elif size.static:
                    dims.append(IntImm(size.min))
                else:
                    dims.append(IntVar([size.min, size.max], size.name))
            if self.options["channels_last_io"] and len(dims) == 4:
                dims = [dims[0], dims[2], dims[3], dims[1]]
            specs.append(TensorSpec(dims, example.dtype))
        return specs

    def compile(self, request: CompileRequest):
        from fx2ait.acc_tracer import acc_tracer
        from fx2ait.fx2ait import AITInterpreter

        COMPILE_COUNT["n"] += 1
        traced = acc_tracer.trace(request.module, list(request.example_inputs))
        workdir = request.cache_dir / "aitemplate"
        workdir.mkdir(parents=True, exist_ok=True)
        result = AITInterpreter(
            traced,
            self._tensor_specs(request),
            str(workdir),
            request.staging_dir.name.strip("."),
            use_fp16_acc=self.options["use_fp16_acc"],
        ).run()
        shutil.copy2(result.engine.lib_path, request.staging_dir / LIBRARY_NAME)
        request.extra["ait_input_names"] = list(result.input_names)
        request.extra["ait_output_names"] = list(result.output_names)
        return self._runner(request.staging_dir / LIBRARY_NAME, request.extra, request.dtype)

    def _runner(self, library: Path, extra: dict, dtype: str):
        import torch
        from fx2ait.ait_module import AITModule

        torch_dtype = getattr(torch, dtype)
        module = AITModule(
            torch.classes.ait.AITModel(
                str(library),
                extra["ait_input_names"],
                extra["ait_output_names"],
                torch_dtype,
                torch_dtype,
                1,
            )
        )

        def run(*inputs):
            outputs = module(*self._permute_in(inputs))
            if isinstance(outputs, torch.Tensor):
                outputs = (outputs,)
            return self._permute_out(outputs)

        return run

    def load(self, artifact_dir, manifest, device, rebuild):
        self.check_available(device)
        return self._runner(
            Path(artifact_dir) / LIBRARY_NAME, manifest.get("backend_extra", {}), manifest["dtype"]
        )
