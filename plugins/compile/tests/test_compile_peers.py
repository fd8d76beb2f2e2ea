"""The peer backends: onnxruntime and openvino (CPU) build a tiny model exported with torch.onnx
(dynamo), checked against eager, cached, and reloaded in a fresh process without the model's
Python libraries; tensorrt does the same on CUDA (gpu-marked, skipped here with the reason)."""

from __future__ import annotations

import json

import pytest
import torch
from mlplatform_compile import build
from mlplatform_compile.backends.base import COMPILE_COUNT
from mlplatform_compile.testing import load_without_model_libraries

from mlplatform.errors import DeviceError

CLIP = dict(
    hf_hub="builtin:tiny_clip_text",
    random_weights=True,
    build_kwargs={"batch_size": [1, 3], "sequence_length": [4, 16]},
    benchmark_runs=0,  # parity is what these tests check; timing is the benchmark's job
)
PEERS = {  # backend -> (device, dtype, the runtime it needs, files it writes)
    "onnxruntime": ("cpu", "float32", "onnxruntime", {"model.onnx", "model.onnx.data"}),
    "openvino": ("cpu", "float32", "openvino", {"model.xml", "model.bin"}),
    "tensorrt": ("cuda", "float32", "torch_tensorrt", {"model.ep"}),
    "aitemplate": ("cuda", "float16", "fx2ait", {"model.so"}),
    "aot_inductor": ("cuda", "float16", "torch", {"model.pt2"}),
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend",
    [
        "onnxruntime",
        "openvino",
        *(pytest.param(name, marks=pytest.mark.gpu) for name in ("tensorrt", "aitemplate", "aot_inductor")),
    ],
)
def test_peer_build_is_verified_cached_and_reloads_without_model_code(
    backend, compile_cache, tmp_path
):
    device, dtype, runtime, files = PEERS[backend]
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"backend={backend} builds on CUDA only and this machine has no CUDA device")
    pytest.importorskip(runtime, reason=f"needs pip install 'mlplatform-compile[{backend}]'")
    result = build(
        "clip_text", backend, cache_dir=compile_cache, device=device, dtype=dtype, **CLIP
    )
    manifest = result.manifest
    assert manifest["backend"]["name"] == backend
    if runtime != "torch":  # the runtime's version is in the cache key
        assert runtime.split("_")[-1] in manifest["backend"]["version"]
    assert files <= set(manifest["files"])
    tolerance = manifest["tolerance"]
    assert manifest["max_relative_error"] <= tolerance
    assert manifest["parity"]["max"]["sizes"] == {"batch": 3, "sequence": 16}

    before = COMPILE_COUNT["n"]
    again = build(
        "clip_text", backend, cache_dir=compile_cache, device=device, dtype=dtype, **CLIP
    )
    assert again.cached and COMPILE_COUNT["n"] == before

    cases = []
    for sizes in ({"batch": 2, "sequence": 7}, {"batch": 1, "sequence": 16}):
        inputs = result.example_inputs(sizes, seed=4)
        expected = result.eager_module(inputs)["last_hidden_state"]
        cases.append({"inputs": inputs, "expected": expected})
    too_long = torch.zeros(1, 17, dtype=torch.long, device=device)
    cases.append({"inputs": {"input_ids": too_long}, "expected": torch.zeros(1)})
    torch.save(cases, tmp_path / "io.pt")
    proc = load_without_model_libraries(result.artifact_dir, tmp_path / "io.pt", "last_hidden_state")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outcome = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert outcome["loaded"] == []
    first, second, outside = outcome["results"]
    assert first["rel"] <= tolerance and second["rel"] <= tolerance
    assert "outside the compiled range" in outside["refused"]


def test_tensorrt_refuses_to_build_without_cuda_with_the_reason():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the gpu test above builds with TensorRT")
    with pytest.raises(DeviceError, match="TensorRT builds engines for CUDA GPUs only"):
        build("clip_text", "tensorrt", device="cpu", **CLIP)


def test_onnxruntime_refuses_cuda_without_its_provider():
    onnxruntime = pytest.importorskip("onnxruntime")
    from mlplatform_compile.backends.ort import OnnxRuntimeBackend

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA execution provider")
    with pytest.raises(DeviceError, match="CUDAExecutionProvider"):
        OnnxRuntimeBackend().check_available(torch.device("cuda"))
