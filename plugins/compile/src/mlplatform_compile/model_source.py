"""Where a builder's model comes from: a hub id / local directory, or a shipped config.

`hf_hub: builtin:NAME` names a config JSON shipped in `mlplatform_compile/model_configs`. Such a
model has no weights, so it is refused unless `random_weights: true` is set explicitly; random
weights can also be asked for with a real hub id (only its config is then read). Every build from
random weights carries `random_weights: true` and a warning in its name, manifest and output.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError, ModelSourceError

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
RANDOM_WEIGHTS_NOTE = (
    "RANDOM WEIGHTS: built from a config only, not a trained model; outputs are meaningless"
)


def shipped_configs() -> list[str]:
    root = resources.files("mlplatform_compile.model_configs")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json"))


def load_shipped_config(name: str) -> dict[str, Any]:
    """The config dict of a shipped model config (e.g. 'sd15_vae', 'tiny_vae')."""
    root = resources.files("mlplatform_compile.model_configs")
    path = root / f"{name}.json"
    if not path.is_file():
        raise ModelSourceError(
            f"no shipped model config named {name!r}",
            f"use one of: {', '.join(BUILTIN_PREFIX + n for n in shipped_configs())}",
        )
    config = json.loads(path.read_text())
    config.pop("_comment", None)
    return config


@dataclass(frozen=True)
class ModelSource:
    """A resolved source: the config to build from and, unless random, the directory of weights."""

    hf_hub: str
    config: dict[str, Any]
    directory: Path | None  # None for shipped configs
    random_weights: bool
    seed: int
    subfolder: str | None = None
    revision: str | None = None

    def describe(self) -> dict[str, Any]:
        info = {
            "hf_hub": self.hf_hub,
            "subfolder": self.subfolder,
            "revision": self.revision,
            "random_weights": self.random_weights,
        }
        if self.random_weights:
            info["seed"] = self.seed
            info["note"] = RANDOM_WEIGHTS_NOTE
        return info


def resolve(
    hf_hub: str,
    *,
    random_weights: bool = False,
    seed: int = 0,
    subfolder: str | None = None,
    revision: str | None = None,
    config_file: str | None = "config.json",
) -> ModelSource:
    """Resolve `hf_hub` to a ModelSource, enforcing the explicit random-weights rule."""
    if not hf_hub:
        raise ConfigError(
            "no model source given",
            "set builder.hf_hub to a hub id, a local directory or builtin:NAME",
        )
    hf_hub = str(hf_hub)
    if hf_hub.startswith(BUILTIN_PREFIX):
        name = hf_hub[len(BUILTIN_PREFIX) :]
        if not random_weights:
            raise ConfigError(
                f"{hf_hub!r} is a shipped config without weights, and random weights were not requested",
                "add random_weights=true (builder.random_weights=true) to build it with random "
                "weights, or point hf_hub at a real model (hub id or local directory)",
            )
        return ModelSource(hf_hub, load_shipped_config(name), None, True, seed)

    from mlplatform.api import read_json_file, resolve_model_source

    directory = resolve_model_source(
        hf_hub, subfolder=subfolder, revision=revision, required_file=config_file
    )
    config: dict[str, Any] = {}
    if config_file:
        config = read_json_file(directory / config_file, f"model config of {hf_hub!r}")
    if random_weights:
        log.warning(
            "%s: only the config of %s is used (%s)", hf_hub, directory, RANDOM_WEIGHTS_NOTE
        )
    return ModelSource(hf_hub, config, directory, random_weights, seed, subfolder, revision)


def config_for_key(config: dict[str, Any]) -> dict[str, Any]:
    """The config without keys that name where it came from rather than what it builds."""
    volatile = {
        "_name_or_path",
        "_diffusers_version",
        "transformers_version",
        "_commit_hash",
        "_use_default_values",
    }
    return {k: v for k, v in config.items() if k not in volatile}
