"""Hydra composition: the primary config and the config groups plugins ship.

The primary config is stored in Hydra's ConfigStore before Hydra starts, and every plugin's config
package joins Hydra's search path as `pkg://...` through a search-path plugin registered by hand
(`Plugins.instance().register`). That works for editable and regular (wheel) installs alike, shows
in `--help`, and does not depend on the `hydra_plugins` namespace scan.
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError, UnknownNameError
from .jobs import is_missing_job
from .plugins import PluginHost
from .registry import closest

PRIMARY_CONFIG_NAME = "mlplatform_config"
PRESET_GROUP = "experiment"  # conf/experiment/NAME.yaml, selected with experiment=NAME
CORE_CONFIG_PACKAGE = "mlplatform.conf"  # Hydra's main search path (cli passes config_path="conf")
_SIMPLE_CHOICE = re.compile(r"^(?P<group>[A-Za-z_][\w]*)=(?P<value>[\w.\-]+)$")


def default_job(host: PluginHost) -> str:
    """`build` once a plugin provides it, else the plugin listing."""
    registry = host.registry
    if "build" in registry.names("job") and not is_missing_job(registry.job("build")):
        return "build"
    return "plugins"


def checkout_config_dir() -> Path | None:
    """The repository's `conf/` (ready-made presets) when mlplatform runs from a checkout."""
    candidate = Path(__file__).resolve().parents[2] / "conf"
    return candidate if (candidate / PRESET_GROUP).is_dir() else None


def _config_packages(host: PluginHost) -> list[str]:
    return [package for _source, package in host.registry.config_packages]


def store_primary_config(host: PluginHost) -> None:
    """The primary config (typed core keys, open to the keys plugin groups add), every plugin's
    config schemas, and a typed stand-in for registered jobs that ship no job/<name>.yaml."""
    from hydra.core.config_store import ConfigStore

    from .schemas import JobConfig, store_schema, typed_primary_node

    store = ConfigStore.instance()
    node: dict[str, Any] = {
        # a preset comes last, so it can set anything the job and the keys below set
        "defaults": [{"job": default_job(host)}, "_self_", {PRESET_GROUP: None}],
        **typed_primary_node(),
        "hydra": {"help": {"app_name": "mlplatform"}},
    }
    store.store(name=PRIMARY_CONFIG_NAME, node=node)
    for entry in host.registry.config_schemas.values():
        store_schema(entry)
    packaged = _packaged_choices(host).get("job", set())
    for name in host.registry.names("job"):
        if name not in packaged:
            store.store(group="job", name=name, node=JobConfig(name=name))


def _packaged_choices(host: PluginHost) -> dict[str, set[str]]:
    """Config group -> option names found in the plugins' config packages and the checkout."""
    roots: list[Any] = []
    for package in _config_packages(host):
        try:
            roots.append(resources.files(package))
        except ModuleNotFoundError:
            continue
    checkout = checkout_config_dir()
    if checkout is not None:
        roots.append(checkout)
    choices: dict[str, set[str]] = {}
    for root in roots:
        for group in root.iterdir():
            if group.is_dir() and not group.name.startswith(("_", ".")):
                names = {f.name[:-5] for f in group.iterdir() if f.name.endswith(".yaml")}
                choices.setdefault(group.name, set()).update(names)
    return choices


def register_search_path(host: PluginHost) -> None:
    """Put each plugin's config package on Hydra's search path, after the core's own."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    entries = [
        (f"mlplatform plugin {source}", f"pkg://{package}")
        for source, package in host.registry.config_packages
        if package != CORE_CONFIG_PACKAGE
    ]
    checkout = checkout_config_dir()
    if checkout is not None:
        entries.append(("mlplatform checkout presets", f"file://{checkout}"))

    class MLPlatformSearchPath(SearchPathPlugin):
        def manipulate_search_path(self, search_path) -> None:
            for provider, path in entries:
                search_path.append(provider=provider, path=path)

    Plugins.instance().register(MLPlatformSearchPath)


def available_choices(host: PluginHost) -> dict[str, set[str]]:
    """Config group -> option names: every plugin's config package plus every registered job."""
    choices = _packaged_choices(host)
    choices.setdefault("job", set()).update(host.registry.names("job"))
    return choices


# Hydra flags that take the next argument as their value
_FLAGS_WITH_VALUE = {
    "--cfg", "-c", "--info", "-i", "--package", "-p", "--config-path", "-cp",
    "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun", "--shell-completion",
}


def override_args(args: list[str]) -> list[str]:
    """The `key=value` overrides among the command-line arguments (flags and their values skipped)."""
    overrides, skip_next = [], False
    for arg in args:
        if skip_next:
            skip_next = False
        elif arg in _FLAGS_WITH_VALUE:
            skip_next = True
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides


def check_override_syntax(args: list[str]) -> None:
    """Name the malformed override and show how to quote it, instead of a bare parser message."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for arg in override_args(args):
        try:
            parser.parse_overrides([arg])
        except HydraException as exc:
            raise ConfigError(
                f"malformed override {arg!r}: {str(exc).splitlines()[0]}",
                "write overrides as key=value; quote values with brackets, commas or spaces, "
                "e.g. 'key=\"a,b\"' (see https://hydra.cc/docs/advanced/override_grammar/basic/)",
            ) from exc


def check_choices(args: list[str], host: PluginHost) -> None:
    """Answer `group=unknown` with the known options and the closest match, before Hydra runs."""
    choices = available_choices(host)
    for arg in override_args(args):
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


def explain_composition_error(exc: BaseException) -> ConfigError | None:
    """Turn Hydra's composition errors (wrong type, unknown key, missing option) into a
    ConfigError naming the key, the value, the expected type and the fix; None for others."""
    from hydra.errors import HydraException
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        OmegaConfBaseException,
        ValidationError,
    )

    from .schemas import field_type

    chain, cause = [], exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if not any(isinstance(e, (HydraException, OmegaConfBaseException)) for e in chain):
        return None
    omega = next((e for e in chain if isinstance(e, OmegaConfBaseException)), None)
    headline = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else ""
    inspect_fix = "`python -m mlplatform job=NAME --cfg job` prints every option with its value"
    if isinstance(omega, ValidationError) and omega.full_key:
        expected = field_type(omega.object_type, omega.key) or _node_type(omega.child_node)
        example = _EXAMPLES.get(expected or "", "VALUE")
        return ConfigError(
            f"option {omega.full_key} got {omega.value!r}"
            + (f", expected {expected}" if expected else "")
            + f" ({omega.msg.splitlines()[0]})",
            f"pass a value of that type, e.g. {omega.full_key}={example}; {inspect_fix}",
        )
    if isinstance(omega, (ConfigKeyError, ConfigAttributeError)) and omega.full_key:
        schema = omega.object_type
        if dataclasses.is_dataclass(schema):
            known, owner = [f.name for f in dataclasses.fields(schema)], schema.__name__
        else:
            parent = omega.parent_node
            known, owner = (sorted(str(k) for k in parent.keys()) if parent is not None else []), ""
        guess = closest(str(omega.key), known) if known else None
        return ConfigError(
            f"unknown option {omega.full_key}"
            + (f" ({owner or 'this level'} has: {', '.join(known)})" if known else "")
            + (f"; did you mean {guess!r}?" if guess else ""),
            f"fix the key's spelling; {inspect_fix}",
        )
    detail = omega.msg.splitlines()[0] if omega is not None else ""
    return ConfigError(
        headline + (f": {detail}" if detail and detail not in headline else ""),
        f"check the override; {inspect_fix}",
    )


_EXAMPLES = {"int": "3", "float": "0.001", "bool": "true", "float or null": "0.001"}


def _node_type(node: Any) -> str | None:
    from omegaconf import nodes

    names = {
        nodes.IntegerNode: "int", nodes.FloatNode: "float", nodes.BooleanNode: "bool",
        nodes.StringNode: "str", nodes.EnumNode: "one of the enum's names",
    }
    return names.get(type(node))


def compose_config(overrides: list[str], host: PluginHost | None = None) -> Any:
    """The composed config `python -m mlplatform OVERRIDES` would run, in this process (for
    tests and notebooks): the same primary config, schemas, plugin groups and checks."""
    from hydra import compose, initialize_config_module

    from .plugins import get_host

    host = host or get_host()
    check_override_syntax(overrides)
    check_choices(overrides, host)
    store_primary_config(host)
    register_search_path(host)
    with initialize_config_module(config_module=CORE_CONFIG_PACKAGE, version_base="1.3"):
        return compose(config_name=PRIMARY_CONFIG_NAME, overrides=list(overrides))
