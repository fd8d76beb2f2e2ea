"""Artifact names: a readable prefix plus a short hash of everything that changes the artifact.

DinoML's names leave out dtype, the minimum resolution and the batch range, so different builds
overwrite each other; here any change to backend (and its version/options), torch version, dtype,
device kind and ISA/capability, any dynamic range, the model config or the weights gives a new name.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

KEY_FORMAT = 1
HASH_LENGTH = 12


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"key_format": KEY_FORMAT, **key}).encode()).hexdigest()[
        :HASH_LENGTH
    ]


def slug(text: Any) -> str:
    """Lower-case, filesystem-safe, no dots (dots separate the fields of a name)."""
    return re.sub(r"[^a-z0-9_\-]+", "_", str(text).lower()).strip("_") or "x"


def label_from_source(hf_hub: str) -> str:
    """A readable label for a source: builtin:NAME -> NAME, a hub id or a local path -> its last
    component ("stable-diffusion-v1-5/stable-diffusion-v1-5" -> "stable-diffusion-v1-5")."""
    text = str(hf_hub).removeprefix("builtin:").rstrip("/\\")
    last = re.split(r"[/\\]", text)[-1]
    for suffix in (".safetensors", ".pth", ".pt", ".ckpt"):
        last = last.removesuffix(suffix)
    return last or "model"


def range_text(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


def name_fields(
    device_fp: dict[str, str],
    dtype: str,
    label: str,
    model_type: str,
    ranges: dict[str, tuple[int, int]],
) -> dict[str, str]:
    """Fields a builder's `model_name` format string may use."""
    cuda = device_fp.get("kind") == "cuda"
    capability = device_fp.get("capability", "")
    fields = {
        "model_type": slug(model_type),
        "label": slug(label or "default"),
        "dtype": slug(dtype),
        "device_name": slug(device_fp.get("name", "cpu")) if cuda else "cpu",
        "sm": capability.removeprefix("sm") if cuda else slug(capability),
        "device_tag": capability if cuda else f"cpu_{slug(capability)}",
    }
    for name, (low, high) in ranges.items():
        fields[name] = range_text(low, high)
        fields[f"{name}_max"] = str(high)
    if "resolution" not in fields and "height" in fields and "width" in fields:
        fields["resolution"] = f"{fields['height']}x{fields['width']}"
    fields.setdefault("resolution", "na")
    fields.setdefault("batch", "na")
    return fields


# a name longer than this lists the profile count instead of the profiles
PROFILES_TEXT_LIMIT = 48


def profiles_text(names: list[str]) -> str:
    """`.p-b1_r512+b1_r768` (or `.p3` for many): a name that says the artifact has profiles."""
    if not names:
        return ""
    text = "+".join(names)
    return f".p-{text}" if len(text) <= PROFILES_TEXT_LIMIT else f".p{len(names)}"


def artifact_name(
    model_name: str,
    fields: dict[str, str],
    backend: str,
    digest: str,
    random_weights: bool,
    profiles: list[str] | None = None,
) -> str:
    try:
        prefix = model_name.format(**fields)
    except KeyError as exc:
        from mlplatform.api import ConfigError

        raise ConfigError(
            f"model_name {model_name!r} uses an unknown field {exc}",
            f"use only: {', '.join(sorted(fields))}",
        ) from exc
    prefix += profiles_text(list(profiles or []))
    if random_weights:
        prefix += ".random_weights"
    return f"{prefix}.{slug(backend)}-{digest}"
