"""Plugin discovery: built-in and third-party plugins load the same way, one at a time.

Each entry point in the `mlplatform` group is imported, validated and asked to register in its own
try/except, so one broken plugin is reported (and listed by `job=plugins`) instead of taking the
host down. Environment switches:

- MLPLATFORM_LOAD_PLUGINS=a,b   load only these entry points (empty: none)
- MLPLATFORM_DISABLE_PLUGINS=a  skip these
- MLPLATFORM_STRICT_PLUGINS=1   a plugin failure is fatal
"""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import Entry, Registrar, Registry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mlplatform"
REGISTER_HOOKS = [name for name in dir(hookspecs) if name.startswith("register_")]


@dataclass
class PluginRecord:
    """What `job=plugins` shows for one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    status: str = "loaded"  # loaded | failed | disabled
    error: str | None = None
    registered: list[Entry] = field(default_factory=list)
    config_packages: list[str] = field(default_factory=list)


@dataclass
class PluginHost:
    manager: pluggy.PluginManager
    registry: Registry
    records: list[PluginRecord]


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def strict_plugins() -> bool:
    return os.environ.get("MLPLATFORM_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes"}


def _register_plugin(
    manager: pluggy.PluginManager, registry: Registry, module: ModuleType, record: PluginRecord
) -> None:
    """Register one plugin module and run its register_* hooks, all or nothing."""
    manager.register(module, name=record.name)
    try:
        manager.check_pending()
        registrar = Registrar(record.distribution)
        for hook_name in REGISTER_HOOKS:
            caller = getattr(manager.hook, hook_name)
            for impl in caller.get_hookimpls():
                if impl.plugin is module:
                    impl.function(**{arg: registrar for arg in impl.argnames})
        record.registered = registrar.commit(registry)
        record.config_packages = list(registrar.config_packages)
    except BaseException:
        manager.unregister(module)
        raise


def _fail(record: PluginRecord, exc: BaseException) -> None:
    record.status = "failed"
    record.error = f"{type(exc).__name__}: {exc}"
    log.debug("plugin %s failed:\n%s", record.name, traceback.format_exc())
    if strict_plugins():
        raise PluginError(
            f"plugin {record.name!r} from {record.distribution} {record.version} failed to load: "
            f"{record.error}",
            "fix or uninstall that plugin, or unset MLPLATFORM_STRICT_PLUGINS to continue without it",
        ) from exc
    log.warning(
        "plugin %r (%s %s) failed to load and is skipped: %s "
        "(set MLPLATFORM_STRICT_PLUGINS=1 to make this fatal)",
        record.name, record.distribution, record.version, record.error,
    )


def load_plugins(extra_modules: list[ModuleType] | None = None) -> PluginHost:
    """Discover, import and register every selected plugin; return the populated host."""
    from . import builtin

    manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
    manager.add_hookspecs(hookspecs)
    registry = Registry()
    records: list[PluginRecord] = []

    from . import __version__

    core = PluginRecord("mlplatform", "mlplatform", __version__, builtin.__name__)
    _register_plugin(manager, registry, builtin, core)
    records.append(core)

    only = _env_list("MLPLATFORM_LOAD_PLUGINS")
    disabled = set(_env_list("MLPLATFORM_DISABLE_PLUGINS") or [])
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        record = PluginRecord(
            name=ep.name,
            distribution=dist.name if dist else "?",
            version=dist.version if dist else "?",
            module=ep.value,
        )
        records.append(record)
        if (only is not None and ep.name not in only) or ep.name in disabled:
            record.status = "disabled"
            continue
        try:
            module = ep.load()
            if not isinstance(module, ModuleType):
                raise PluginError(
                    f"entry point {ep.name} = {ep.value} is not a module", "point it at a module"
                )
            _register_plugin(manager, registry, module, record)
        except Exception as exc:
            _fail(record, exc)

    for module in extra_modules or []:
        record = PluginRecord(module.__name__, module.__name__, "", module.__name__)
        records.append(record)
        try:
            _register_plugin(manager, registry, module, record)
        except Exception as exc:
            _fail(record, exc)

    from .jobs import add_missing_standard_jobs

    add_missing_standard_jobs(registry)
    return PluginHost(manager, registry, records)


_HOST: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, loaded on first use."""
    global _HOST
    if _HOST is None:
        _HOST = load_plugins()
    return _HOST


def get_registry() -> Registry:
    return get_host().registry


def reset_host() -> None:
    """Forget the loaded plugins (tests use this after changing the environment)."""
    global _HOST
    _HOST = None


def describe(record: PluginRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "distribution": record.distribution,
        "version": record.version,
        "module": record.module,
        "status": record.status,
        "error": record.error,
        "registered": [f"{e.kind}:{e.name}" for e in record.registered],
        "config_packages": record.config_packages,
    }
