"""Hydra composition: the primary config and the config groups plugins ship.

The primary config is stored in Hydra's ConfigStore before Hydra starts; it puts every plugin's
config package on Hydra's search path as `pkg://...`, which works for editable and regular
(wheel) installs alike and does not depend on the `hydra_plugins` namespace scan.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from .errors import UnknownNameError
from .jobs import STANDARD_JOBS, is_missing_job
from .plugins import PluginHost
from .registry import closest

PRIMARY_CONFIG_NAME = "mlplatform_config"
CORE_CONFIG_PACKAGE = "mlplatform.conf"  # Hydra's main search path (cli passes config_path="conf")
_SIMPLE_CHOICE = re.compile(r"^(?P<group>[A-Za-z_][\w]*)=(?P<value>[\w.\-]+)$")


def default_job(host: PluginHost) -> str:
    """`build` once a plugin provides it, else the plugin listing."""
    registry = host.registry
    if "build" in registry.names("job") and not is_missing_job(registry.job("build")):
        return "build"
    return "plugins"


def _config_packages(host: PluginHost) -> list[str]:
    return [package for _source, package in host.registry.config_packages]


def store_primary_config(host: PluginHost) -> None:
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    node: dict[str, Any] = {
        "defaults": [{"job": default_job(host)}, "_self_"],
        "device": "auto",
        "dtype": "float32",
        "seed": 0,
        "hydra": {
            "searchpath": [
                f"pkg://{package}"
                for package in _config_packages(host)
                if package != CORE_CONFIG_PACKAGE
            ]
        },
    }
    store.store(name=PRIMARY_CONFIG_NAME, node=node)
    for name in STANDARD_JOBS:
        if is_missing_job(host.registry.job(name)):
            store.store(group="job", name=name, node={"name": name})


def available_choices(host: PluginHost) -> dict[str, set[str]]:
    """Config group -> option names, from every plugin's config package."""
    choices: dict[str, set[str]] = {}
    for package in _config_packages(host):
        try:
            root = resources.files(package)
        except ModuleNotFoundError:
            continue
        for group in root.iterdir():
            if group.is_dir() and not group.name.startswith(("_", ".")):
                names = {f.name[:-5] for f in group.iterdir() if f.name.endswith(".yaml")}
                choices.setdefault(group.name, set()).update(names)
    for name in STANDARD_JOBS:
        choices.setdefault("job", set()).add(name)
    return choices


def check_choices(args: list[str], host: PluginHost) -> None:
    """Answer `group=unknown` with the known options and the closest match, before Hydra runs."""
    choices = available_choices(host)
    for arg in args:
        match = _SIMPLE_CHOICE.match(arg)
        if not match or match["group"] not in choices:
            continue
        group, value = match["group"], match["value"]
        known = choices[group]
        if value in known:
            continue
        suggestion = closest(value, known)
        problem = f"unknown {group} {value!r}; available: {', '.join(sorted(known))}"
        if suggestion:
            problem += f" (did you mean {group}={suggestion}?)"
        raise UnknownNameError(
            problem,
            "run `python -m mlplatform job=plugins` to see installed plugins, "
            "or `python -m mlplatform --help` for every config group",
        )
