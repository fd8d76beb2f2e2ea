"""Reading weights without running code from them: safetensors, or torch.load(weights_only=True);
a full pickle only for a model whose owner opted in (catalog `allow_pickle`, or
`manager.allow_pickle=[NAME]`)."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

from mlplatform.api import ArtifactError

from .errors import UnsafeModelError

log = logging.getLogger(__name__)


def load_state_dict(path: Path, *, model: str, allow_pickle: bool = False) -> dict[str, Any]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ArtifactError(
                f"model {model!r}: {path} is not a readable safetensors file: {exc}",
                "delete it so it is downloaded again, or fix the catalog entry",
            ) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not allow_pickle:
            raise UnsafeModelError(
                f"model {model!r}: {path.name} is a pickle that needs more than tensors to load "
                f"(weights_only=True refused it: {str(exc).splitlines()[0]})",
                f"loading it runs code from the file; only if you trust its source, opt in for "
                f"this model: manager.allow_pickle=[{model}] (or \"allow_pickle\": true in your "
                "catalog entry); better, convert it to safetensors",
            ) from exc
        log.warning("model %r: loading %s as a full pickle (opted in)", model, path)
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as exc:
        raise ArtifactError(
            f"model {model!r}: {path} cannot be read by torch.load: {exc}",
            "delete it so it is downloaded again, or fix the catalog entry",
        ) from exc
