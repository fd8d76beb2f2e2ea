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
        import torch
        from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

        weights = [p for p in request.files if p.endswith(WEIGHT_SUFFIXES)]
        if len(weights) != 1:
            raise ArtifactError(
                f"model {request.entry.name!r}: expected one weights file, found {weights}",
                "list exactly one .safetensors/.pth file in the catalog entry",
            )
        state = request.state_dict(weights[0])
        try:
            descriptor = ModelLoader().load_from_state_dict(state)
        except UnsupportedModelError as exc:
            raise ArtifactError(
                f"model {request.entry.name!r}: spandrel does not recognise the architecture of "
                f"{weights[0]}", "check that the file is an ESRGAN-family state dict",
            ) from exc
        if not isinstance(descriptor, ImageModelDescriptor):
            raise ArtifactError(
                f"model {request.entry.name!r} is a {descriptor.architecture.name} "
                f"({descriptor.purpose}) model, not an image-to-image upscaler",
                "use a catalog entry of the matching type",
            )
        expected = request.entry.settings().scale
        if expected is not None and descriptor.scale != expected:
            raise ArtifactError(
                f"model {request.entry.name!r}: the weights upscale {descriptor.scale}x, the "
                f"catalog says {expected}x", "fix config.scale in the catalog entry",
            )
        dtype = request.dtype
        if dtype == torch.float16 and not descriptor.supports_half:
            log.warning("%s does not support float16; using float32", request.entry.name)
            dtype = torch.float32
        if dtype == torch.bfloat16 and not descriptor.supports_bfloat16:
            log.warning("%s does not support bfloat16; using float32", request.entry.name)
            dtype = torch.float32
        descriptor.to(request.device)
        descriptor.to(dtype)
        descriptor.eval()
        return descriptor
