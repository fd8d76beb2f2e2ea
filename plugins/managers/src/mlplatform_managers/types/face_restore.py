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
from .esrgan import read_descriptor, ready_for_inference

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
        from spandrel import ImageModelDescriptor

        name = request.entry.name
        descriptor = read_descriptor(
            request, registry=self.registry(),
            hint=f"check that the file is a {self.architecture} checkpoint and the entry's type",
        )
        if not isinstance(descriptor, ImageModelDescriptor) or \
                descriptor.architecture.id != self.architecture:
            raise ArtifactError(
                f"model {name!r} is a {descriptor.architecture.name} model, not "
                f"{self.architecture}", "use a catalog entry of the matching type",
            )
        return ready_for_inference(descriptor, request, verb="scale faces")


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
