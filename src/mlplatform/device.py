"""Device and dtype policy shared by every plugin.

`device=auto` picks CUDA when present and says which; an explicit device the machine lacks is an
error; a dtype the device cannot run well (fp16 on CPU) falls back to float32 with one warning,
as Nataili's managers do. torch is imported lazily so `import mlplatform` stays light.
"""

from __future__ import annotations

import logging
import platform
from typing import TYPE_CHECKING, Any

from .errors import DeviceError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}
_warned_fallbacks: set[tuple[str, str]] = set()


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - plugins that need torch depend on it
        raise DeviceError(
            "PyTorch is not installed, so no device can be chosen",
            "install a plugin that needs it (pip install -e plugins/compile) or `pip install torch`",
        ) from exc
    return torch


def resolve_device(name: str | None = "auto") -> torch.device:
    """Turn 'auto', 'cpu', 'cuda' or 'cuda:N' into a torch.device the machine really has."""
    torch = _torch()
    requested = (name or "auto").strip().lower()
    if requested == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        log.info("device=auto resolved to %s (%s)", device, describe_device(device))
        return device
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise DeviceError(
            f"unknown device {name!r}", "use device=auto, device=cpu or device=cuda[:N]"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device={name} was requested but CUDA is not available on this machine",
                "use device=auto (picks CUDA when present, else CPU) or device=cpu",
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device={name} was requested but only {torch.cuda.device_count()} CUDA device(s) exist",
                f"use an index below {torch.cuda.device_count()}",
            )
    elif device.type != "cpu":
        raise DeviceError(f"unsupported device {name!r}", "use device=auto, cpu or cuda[:N]")
    return device


def resolve_dtype(name: Any, device: torch.device) -> torch.dtype:
    """Map a dtype name to torch.dtype, falling back to float32 where the device lacks support."""
    torch = _torch()
    if isinstance(name, torch.dtype):
        canonical = str(name).removeprefix("torch.")
    else:
        canonical = DTYPE_NAMES.get(str(name).strip().lower())
    if canonical not in {"float32", "float16", "bfloat16"}:
        raise DeviceError(
            f"unknown dtype {name!r}", "use dtype=float32, dtype=float16 or dtype=bfloat16"
        )
    if device.type == "cpu" and canonical == "float16":
        key = (device.type, canonical)
        if key not in _warned_fallbacks:
            _warned_fallbacks.add(key)
            log.warning(
                "float16 is not supported for computation on CPU; using float32 instead "
                "(use bfloat16 for reduced precision on CPU)"
            )
        canonical = "float32"
    return getattr(torch, canonical)


def describe_device(device: torch.device) -> str:
    """A human name for the device: the GPU's name, or the CPU's architecture."""
    torch = _torch()
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.machine()} ({cpu_isa()})"


def cpu_isa() -> str:
    """The best SIMD level torch's CPU kernels use here (e.g. 'AVX512'), which compiled code depends on."""
    torch = _torch()
    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # pragma: no cover - very old torch
        return platform.machine()


def device_fingerprint(device: torch.device) -> dict[str, str]:
    """What compiled artifacts are tied to: device kind plus CPU ISA or CUDA capability."""
    torch = _torch()
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return {
            "kind": "cuda",
            "name": torch.cuda.get_device_name(device),
            "capability": f"sm{major}{minor}",
            "cuda": str(torch.version.cuda),
        }
    return {"kind": "cpu", "name": platform.machine(), "capability": cpu_isa()}
