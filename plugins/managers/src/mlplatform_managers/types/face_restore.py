"""gfpgan and codeformer: face restoration networks through spandrel, from their official
checkpoints (a `params_ema` state dict), read safely. They restore one aligned 512 px face;
detection, alignment and paste-back are task=face_restore's job (tasks/face_restore.py).

CodeFormer's architecture ships in `spandrel_extra_arches` (opt-in extra `codeformer`) because its
S-Lab License 1.0 allows non-commercial use only: the manager refuses it until the user accepts
that licence for the model (`manager.accept_licences=[NAME]`)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from mlplatform.api import ArtifactError, ConfigError

from ..base import LoadRequest, TypeManager
from .esrgan import WEIGHT_SUFFIXES

log = logging.getLogger(__name__)

FACE_SIZE = 512  # both networks restore 512 x 512 aligned faces


class FaceRestoreManager(TypeManager):
    """Loads a face restoration network whose spandrel architecture id is `architecture`."""

    types: ClassVar[tuple[str, ...]] = ("gfpgan",)
    description = "GFPGAN face restoration (aligned 512 px faces) through spandrel"
    architecture: ClassVar[str] = "GFPGAN"

    def registry(self) -> Any:
        from spandrel import MAIN_REGISTRY

        return MAIN_REGISTRY

    def load_model(self, request: LoadRequest) -> Any:
        import torch
        from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

        name = request.entry.name
        weights = [p for p in request.files if p.endswith(WEIGHT_SUFFIXES)]
        if len(weights) != 1:
            raise ArtifactError(f"model {name!r}: expected one weights file, found {weights}",
                                "list exactly one .pth/.safetensors file in the catalog entry")
        state = request.state_dict(weights[0])  # spandrel unwraps params_ema / params
        try:
            descriptor = ModelLoader(registry=self.registry()).load_from_state_dict(state)
        except UnsupportedModelError as exc:
            raise ArtifactError(
                f"model {name!r}: spandrel does not recognise {weights[0]} as a "
                f"{self.architecture} checkpoint", "check the file and the entry's type",
            ) from exc
        if not isinstance(descriptor, ImageModelDescriptor) or \
                descriptor.architecture.id != self.architecture:
            raise ArtifactError(
                f"model {name!r} is a {descriptor.architecture.name} model, not "
                f"{self.architecture}", "use a catalog entry of the matching type",
            )
        expected = request.entry.settings().scale
        if expected is not None and descriptor.scale != expected:
            raise ArtifactError(
                f"model {name!r}: the weights scale faces {descriptor.scale}x, the catalog says "
                f"{expected}x", "fix config.scale in the catalog entry",
            )
        dtype = request.dtype
        if dtype == torch.float16 and not descriptor.supports_half:
            log.warning("%s does not support float16; using float32", name)
            dtype = torch.float32
        descriptor.to(request.device)
        descriptor.to(dtype)
        descriptor.eval()
        return descriptor


class CodeFormerManager(FaceRestoreManager):
    types = ("codeformer",)
    description = "CodeFormer face restoration (S-Lab License 1.0, non-commercial; opt-in)"
    architecture = "CodeFormer"
    licence_acceptance = True

    def registry(self) -> Any:
        """spandrel's registry plus the extra architectures, without changing spandrel's own."""
        try:
            from spandrel_extra_arches import EXTRA_REGISTRY
        except ImportError as exc:
            raise ConfigError(
                "CodeFormer needs the package spandrel_extra_arches, which is not installed",
                "pip install 'mlplatform-managers[codeformer]' (its architectures are under "
                "non-commercial licences, so it is an opt-in extra)",
            ) from exc
        from spandrel import MAIN_REGISTRY, ArchRegistry

        registry = ArchRegistry()
        registry.add(*MAIN_REGISTRY, *EXTRA_REGISTRY, ignore_duplicates=True)
        return registry
