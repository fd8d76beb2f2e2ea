"""esrgan: ESRGAN / Real-ESRGAN (and the other super-resolution architectures spandrel detects)
from a state dict in its official layout, read safely."""

from __future__ import annotations

import logging
from typing import Any

from mlplatform.api import ArtifactError

from ..base import LoadRequest, TypeManager

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")


class EsrganManager(TypeManager):
    """Super-resolution models through spandrel (ESRGAN, Real-ESRGAN, SRVGG, SwinIR, ...)."""

    types = ("esrgan",)
    description = "ESRGAN / Real-ESRGAN upscalers through spandrel"

    def load_model(self, request: LoadRequest) -> Any:
        from spandrel import ImageModelDescriptor

        descriptor = read_descriptor(
            request, hint="check that the file is an ESRGAN-family state dict"
        )
        if not isinstance(descriptor, ImageModelDescriptor):
            raise ArtifactError(
                f"model {request.entry.name!r} is a {descriptor.architecture.name} "
                f"({descriptor.purpose}) model, not an image-to-image upscaler",
                "use a catalog entry of the matching type",
            )
        return ready_for_inference(descriptor, request, verb="upscale")


def read_descriptor(request: LoadRequest, *, hint: str, registry: Any = None) -> Any:
    """The entry's one weights file, read safely, as the spandrel descriptor it holds
    (`registry`: spandrel's main registry unless given)."""
    from spandrel import ModelLoader, UnsupportedModelError

    weights = [p for p in request.files if p.endswith(WEIGHT_SUFFIXES)]
    if len(weights) != 1:
        raise ArtifactError(
            f"model {request.entry.name!r}: expected one weights file, found {weights}",
            "list exactly one .safetensors/.pth file in the catalog entry",
        )
    state = request.state_dict(weights[0])  # spandrel unwraps params_ema / params
    try:
        loader = ModelLoader() if registry is None else ModelLoader(registry=registry)
        return loader.load_from_state_dict(state)
    except UnsupportedModelError as exc:
        raise ArtifactError(
            f"model {request.entry.name!r}: spandrel does not recognise the architecture of "
            f"{weights[0]}", hint,
        ) from exc


def ready_for_inference(descriptor: Any, request: LoadRequest, *, verb: str) -> Any:
    """Check the catalog's scale, then move the model to the request's device and dtype (float32
    where the architecture cannot run the requested half precision) in eval mode."""
    import torch

    name = request.entry.name
    expected = request.entry.settings().scale
    if expected is not None and descriptor.scale != expected:
        raise ArtifactError(
            f"model {name!r}: the weights {verb} {descriptor.scale}x, the catalog says "
            f"{expected}x", "fix config.scale in the catalog entry",
        )
    dtype = request.dtype
    if dtype == torch.float16 and not descriptor.supports_half:
        log.warning("%s does not support float16; using float32", name)
        dtype = torch.float32
    if dtype == torch.bfloat16 and not descriptor.supports_bfloat16:
        log.warning("%s does not support bfloat16; using float32", name)
        dtype = torch.float32
    descriptor.to(request.device)
    descriptor.to(dtype)
    descriptor.eval()
    return descriptor
