import logging

import pytest

torch = pytest.importorskip("torch")

from mlplatform.device import device_fingerprint, resolve_device, resolve_dtype  # noqa: E402
from mlplatform.errors import DeviceError  # noqa: E402


def test_auto_picks_cuda_when_present_else_cpu(caplog):
    with caplog.at_level(logging.INFO, logger="mlplatform.device"):
        device = resolve_device("auto")
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert "device=auto resolved to" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_explicit_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(DeviceError, match="CUDA is not available") as err:
        resolve_device("cuda")
    assert "device=cpu" in err.value.fix


def test_unknown_device_is_refused():
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu9")


def test_fp16_on_cpu_falls_back_to_fp32_with_one_warning(caplog):
    import mlplatform.device as device_module

    device_module._warned_fallbacks.clear()
    cpu = torch.device("cpu")
    with caplog.at_level(logging.WARNING, logger="mlplatform.device"):
        assert resolve_dtype("fp16", cpu) is torch.float32
        assert resolve_dtype("float16", cpu) is torch.float32
    assert caplog.text.count("float16 is not supported") == 1
    assert resolve_dtype("bf16", cpu) is torch.bfloat16
    assert resolve_dtype(torch.float32, cpu) is torch.float32


def test_unknown_dtype_is_refused():
    with pytest.raises(DeviceError, match="unknown dtype 'int3'"):
        resolve_dtype("int3", torch.device("cpu"))


def test_cpu_fingerprint_names_the_isa():
    fingerprint = device_fingerprint(torch.device("cpu"))
    assert fingerprint["kind"] == "cpu"
    assert fingerprint["capability"] == torch.backends.cpu.get_cpu_capability()
