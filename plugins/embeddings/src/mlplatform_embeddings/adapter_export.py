"""The PEFT adapter export of an image-text model (CLIP, open_clip, a tower pair, or any family
whose LoRA lives in peft-wrapped submodules): what training changed, without the base weights.

    model/
      adapters/<module path>/      peft save_pretrained of each LoRA-wrapped submodule
                                   ("backbone" for CLIP and open_clip; "text.backbone" and
                                   "image" for a tower pair)
      trained_parameters.safetensors  the trained parameters outside LoRA (projections, heads;
                                   the logit scale set from the trained temperature), named as
                                   in the model with its adapters on
      manifest.json                format "peft-adapter", the family, and `base_model`: the
                                   model options that rebuild the base (local paths absolute)

Loading (`load_adapter_export`, used by `load_exported`, `embed`, `task=embed` and `build_model`)
rebuilds the base from `base_model`, puts each adapter back on its submodule and loads the
trained parameters: the same embeddings as the model that was exported, and as its merged
export. Nothing is unpickled (safetensors and JSON only)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlplatform.api import (
    ArtifactError,
    ConfigError,
    ModelSourceError,
    remove_stale_staging,
    require_keys,
    staged_directory,
    verify_artifact,
    write_manifest,
)

from .export import EXPORT_KIND

ADAPTER_FORMAT = "peft-adapter"
ADAPTERS_DIR = "adapters"
TRAINED_FILE = "trained_parameters.safetensors"
# the ModelConfig keys that say how the base model is built (not how it is trained)
BASE_OPTION_KEYS = ("model_name", "family", "torch_dtype", "image_model_name", "pooling",
                    "projection_dim", "normalize", "max_seq_length")


def base_options(cfg: Any, family: str) -> dict[str, Any]:
    """The options that rebuild `cfg`'s model without LoRA, local paths made absolute (so an
    export loads from any working directory; a hub id stays a hub id)."""
    options = {key: getattr(cfg, key) for key in BASE_OPTION_KEYS}
    options["family"] = family
    for key in ("model_name", "image_model_name"):
        if options[key] and Path(options[key]).expanduser().exists():
            options[key] = str(Path(options[key]).expanduser().resolve())
    return options


def peft_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The outermost peft-wrapped submodules of `model`, by module path."""
    from peft import PeftModel

    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, PeftModel) and not any(name.startswith(f"{p}.") for p in found):
            found[name] = module
    return found


def trained_parameter_names(model: nn.Module) -> list[str]:
    """The trainable parameters outside LoRA (projections, heads): what training changed in
    the base model besides the adapters."""
    return [name for name, p in model.named_parameters() if p.requires_grad and "lora_" not in name]


def trained_parameters(model: nn.Module, temperature: float | None) -> dict[str, torch.Tensor]:
    """The trained parameters outside LoRA, and each logit scale set from `temperature`."""
    names = set(trained_parameter_names(model))
    tensors = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters()
               if name in names}
    if temperature is not None:
        for name, parameter in model.named_parameters():
            if name.rsplit(".", 1)[-1] == "logit_scale":
                tensors[name] = torch.full_like(parameter.detach().cpu(), math.log(1.0 / temperature))
    return tensors


def export_adapter(model: nn.Module, directory: str | Path, info: dict[str, Any],
                   temperature: float | None = None) -> Path:
    """Write `model`'s adapters, its trained non-LoRA parameters and how to rebuild its base to
    `directory` (replacing an earlier export atomically); `info` goes into the manifest."""
    from safetensors.torch import save_file

    adapters = peft_modules(model)
    if not adapters:
        raise ConfigError("an adapter export needs a LoRA model",
                          "set model.use_lora=true, or drop trainer.export_adapter")
    base = getattr(model, "build_options", None)
    if not base:
        raise ConfigError(f"{type(model).__name__} was not built by build_model, so its base model "
                          "is not known", "build it with mlplatform_embeddings.build_model")
    trained = trained_parameters(model, temperature)
    final = Path(directory)
    remove_stale_staging(final)
    with staged_directory(final) as staging:
        paths = {}
        for name, module in adapters.items():
            paths[name] = f"{ADAPTERS_DIR}/{name}"
            module.save_pretrained(str(staging / paths[name]))
        save_file(trained, str(staging / TRAINED_FILE))
        write_manifest(staging, {
            "kind": EXPORT_KIND, "format": ADAPTER_FORMAT, "family": base["family"],
            "base_model": base, "adapters": paths, "trained_parameters": TRAINED_FILE,
            "trainable": trained_parameter_names(model),
            "adapter": True, "lora_merged": False, **info,
        })
    return final


def is_adapter_export(root: Path) -> bool:
    """Whether `root` holds an adapter export of this module's format (manifest unverified)."""
    import json

    try:
        return json.loads((root / "manifest.json").read_text(encoding="utf-8")).get("format") == ADAPTER_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_adapter_export(directory: str | Path, manifest: dict[str, Any] | None = None, *,
                        torch_dtype: str | None = None) -> Any:
    """The model of an adapter export: its base rebuilt (in `torch_dtype`, else the exported
    model's), the adapters put back on their submodules, the trained parameters loaded (every
    file checked against the manifest first). The trained parameters are trainable again, the
    adapters frozen (peft's inference load)."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from .model_builder import build_model

    root = Path(directory)
    manifest = manifest if manifest is not None else verify_artifact(root)
    require_keys(manifest, {"base_model": dict, "adapters": dict, "trained_parameters": str,
                            "trainable": list}, root)
    base = {**manifest["base_model"], **({"torch_dtype": torch_dtype} if torch_dtype else {})}
    try:
        model = build_model(base)
    except ModelSourceError as exc:
        raise ModelSourceError(f"the base model of the adapter export {root} cannot be loaded: "
                               f"{exc.args[0] if exc.args else exc}",
                               "the base model must stay where it was when the adapter was exported "
                               "(manifest.json, base_model.model_name)") from exc
    for name, path in manifest["adapters"].items():
        _inside(root, path)
        parent_name, _, attribute = name.rpartition(".")
        try:
            parent = model.get_submodule(parent_name)
            submodule = getattr(parent, attribute)
        except AttributeError as exc:
            raise ArtifactError(f"{root}: the base model {base['model_name']} has no module {name!r} "
                                "for the adapter", "export the adapter again from its run") from exc
        setattr(parent, attribute, PeftModel.from_pretrained(submodule, str(root / path)))
    tensors = load_file(str(_inside(root, manifest["trained_parameters"])))
    try:
        result = model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # a shape that is not the base model's
        raise ArtifactError(f"{root}: the trained parameters do not fit the base model "
                            f"{base['model_name']}: {exc}", "export the adapter again from its run") from exc
    if result.unexpected_keys:
        raise ArtifactError(f"{root}: trained parameters {result.unexpected_keys[:3]} name no "
                            f"parameter of the base model {base['model_name']} with its adapters",
                            "export the adapter again from its run")
    trainable = set(manifest["trainable"])
    for name, parameter in model.named_parameters():
        if name in trainable:
            parameter.requires_grad_(True)
    model.build_options = dict(base)
    model.source = str(root)
    return model.eval()


def _inside(root: Path, relative: str) -> Path:
    """root/relative, refused when it leads out of the export (a rewritten manifest)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ArtifactError(f"{root}/manifest.json names {relative!r}, outside the export",
                            "export the adapter again from its run")
    return path
