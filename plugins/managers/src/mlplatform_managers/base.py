"""The base of every model type's manager: how one type's files become a loaded model.

A new type is one subclass and one registration line (`registry.add("manager", NAME, Class)` in
your plugin's `register_model_managers`); the ModelManager does the rest (catalog, download,
verification, device, budget, pinning, unloading). The template::

    from mlplatform_managers import TypeManager

    class MyTypeManager(TypeManager):
        types = ("my_type",)            # catalog types this manager loads
        description = "what it loads"

        def load_model(self, request):  # -> the loaded model object
            weights = request.state_dict("model.safetensors")   # safe loading, never a pickle
            model = MyNet(**request.entry.config)
            model.load_state_dict(weights)
            return model.to(request.device, request.dtype).eval()

`size_bytes` (parameters and buffers of every nn.Module it finds) and `release` (drop it, collect
garbage, empty the CUDA cache) have defaults that fit torch models; override them for others.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .catalog_models import CatalogEntry
from .safe_load import load_state_dict


@dataclass
class LoadRequest:
    """What a TypeManager gets: the entry, where its files are, and where to put the model."""

    entry: CatalogEntry
    root: Path  # the directory holding the entry's files by their catalog paths
    files: dict[str, Path]  # catalog path -> local file
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    allow_pickle: bool = False

    def path(self, relative: str) -> Path:
        return self.files[relative]

    def state_dict(self, relative: str) -> dict[str, Any]:
        return load_state_dict(self.files[relative], model=self.entry.name,
                               allow_pickle=self.allow_pickle)


def _modules_of(model: Any) -> list[Any]:
    import torch

    if isinstance(model, torch.nn.Module):
        return [model]
    found = []
    inner = getattr(model, "model", None)  # spandrel descriptors
    if isinstance(inner, torch.nn.Module):
        found.append(inner)
    if isinstance(model, dict):
        found += [m for v in model.values() for m in _modules_of(v)]
    elif hasattr(model, "components") and isinstance(model.components, dict):  # diffusers
        found += [m for v in model.components.values() for m in _modules_of(v)]
    elif hasattr(model, "__dict__") and not found:
        found += [v for v in vars(model).values() if isinstance(v, torch.nn.Module)]
    return found


def module_bytes(model: Any) -> int:
    """Bytes of the parameters and buffers of every nn.Module in `model` (each tensor once)."""
    seen, total = set(), 0
    for module in _modules_of(model):
        for tensor in [*module.parameters(), *module.buffers()]:
            key = tensor.data_ptr()
            if key not in seen:
                seen.add(key)
                total += tensor.numel() * tensor.element_size()
    return total


class TypeManager:
    """Loads the catalog entries of `types` (see the module docstring for the template)."""

    types: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    # True for models whose licence the user must accept by name before they are fetched or
    # loaded (manager.accept_licences=[NAME]); e.g. CodeFormer's non-commercial S-Lab License
    licence_acceptance: ClassVar[bool] = False

    def load_model(self, request: LoadRequest) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement load_model(request)")

    def size_bytes(self, model: Any) -> int:
        return module_bytes(model)

    def release(self, model: Any, device: Any) -> None:
        """Free what `model` holds. The caller has dropped its own references; this collects
        garbage and returns cached CUDA blocks to the driver."""
        del model
        gc.collect()
        if getattr(device, "type", None) == "cuda":
            import torch

            torch.cuda.empty_cache()


def load_pretrained(request: LoadRequest, model_cls: Any, processor_cls: Any, what: str):
    """(model, processor) from the entry's save_pretrained directory, on the request's device and
    dtype, and a broken directory as an ArtifactError naming the entry instead of a transformers
    traceback. Weights come from the entry's safetensors file, else from its pickled .bin files,
    read here like .pth weights (torch.load(weights_only=True); a full pickle only where the
    entry opted in), so the policy does not rest on a transformers default."""
    from mlplatform.api import ArtifactError

    state = None if any(p.endswith(".safetensors") for p in request.files) else _bin_weights(request)
    try:
        if state is None:
            model = model_cls.from_pretrained(request.root, dtype=request.dtype,
                                              use_safetensors=True, local_files_only=True)
        else:  # transformers takes either a directory or a config + state dict
            config = model_cls.config_class.from_pretrained(request.root, local_files_only=True)
            model = model_cls.from_pretrained(None, config=config, state_dict=state,
                                              dtype=request.dtype)
        processor = processor_cls.from_pretrained(request.root, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ArtifactError(
            f"model {request.entry.name!r}: {request.root} is not a loadable {what} "
            f"directory: {exc}", "check the entry's files (save_pretrained layout)",
        ) from exc
    model.to(request.device).eval()
    return model, processor


def _bin_weights(request: LoadRequest) -> dict[str, Any]:
    """The tensors of the entry's .bin files, read by our own safe loader."""
    state: dict[str, Any] = {}
    for path in sorted(p for p in request.files if p.endswith(".bin")):
        state.update(load_state_dict(request.files[path], model=request.entry.name,
                                     allow_pickle=request.allow_pickle))
    return {k: v for k, v in state.items() if hasattr(v, "dtype")}
