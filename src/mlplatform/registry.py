"""The registry: every named component, who registered it, and helpful answers for unknown names."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import PluginError, UnknownNameError

HINT = "run `python -m mlplatform job=plugins` to see every installed plugin and what it registered"

# kinds the platform knows, with what a user calls them; plugins may add kinds of their own
KINDS = {
    "job": "jobs",
    "builder": "compile builders",
    "backend": "compile backends",
    "manager": "model managers",
    "task": "model-manager tasks",
    "trainer": "trainers",
    "vae_encoder": "text-diffusion VAE encoders",
    "vae_decoder": "text-diffusion VAE decoders",
    "eps_model": "text-diffusion eps-models",
    "noise_schedule": "text-diffusion noise schedules",
    "sampler": "text-diffusion samplers",
}


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    obj: Any
    source: str
    description: str = ""


@dataclass(frozen=True)
class Job:
    """A job selectable with `job=NAME`; `run(cfg)` receives the composed config."""

    name: str
    run: Callable[[Any], Any]
    description: str = ""


def closest(name: str, known: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return matches[0] if matches else None


@dataclass
class Registry:
    """All components by kind and name, plus the config packages plugins ship."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=dict)
    config_packages: list[tuple[str, str]] = field(default_factory=list)
    config_schemas: dict[tuple[str, str], Any] = field(default_factory=dict)  # SchemaEntry

    def add(self, entry: Entry) -> None:
        existing = self.entries.get(entry.kind, {}).get(entry.name)
        if existing is not None:
            raise PluginError(
                f"{KINDS.get(entry.kind, entry.kind)} name {entry.name!r} is registered by both "
                f"{existing.source!r} and {entry.source!r}",
                "uninstall one of them, or disable one with MLPLATFORM_DISABLE_PLUGINS",
            )
        self.entries.setdefault(entry.kind, {})[entry.name] = entry

    def entry(self, kind: str, name: str) -> Entry:
        known = self.entries.get(kind, {})
        if name in known:
            return known[name]
        label = KINDS.get(kind, kind)
        if not known:
            raise UnknownNameError(
                f"no installed plugin provides any {label}, so {name!r} cannot be used", HINT
            )
        suggestion = closest(name, known)
        problem = f"unknown {kind} {name!r}; known {label}: {', '.join(sorted(known))}"
        if suggestion:
            problem += f" (did you mean {suggestion!r}?)"
        raise UnknownNameError(problem, HINT)

    def get(self, kind: str, name: str) -> Any:
        return self.entry(kind, name).obj

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries.get(kind, {}))

    def kinds(self) -> list[str]:
        return sorted(self.entries)

    def job(self, name: str) -> Job:
        return self.get("job", name)


class Registrar:
    """What a plugin's register_* hook receives: adds entries in the plugin's name.

    Entries are staged and committed only when all of the plugin's hooks succeeded, so a plugin
    that fails half-way registers nothing.
    """

    def __init__(self, source: str):
        self.source = source
        self.staged: list[Entry] = []
        self.config_packages: list[str] = []
        self.config_schemas: list[Any] = []

    def add(self, kind: str, name: str, obj: Any, *, description: str = "") -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {self.source!r} registered a {kind} with no name", None)
        self.staged.append(Entry(kind, name, obj, self.source, description))

    def add_job(self, name: str, run: Callable[[Any], Any], description: str = "") -> None:
        self.add("job", name, Job(name, run, description), description=description)

    def add_config_package(self, package: str) -> None:
        """A Python package whose directories are Hydra config groups (e.g. builder/x.yaml)."""
        self.config_packages.append(package)

    def add_config_schema(self, group: str, name: str, schema: type) -> None:
        """The dataclass that types option `name` of config `group`; the option's YAML names it
        first in its defaults list (`- /schema/GROUP/NAME@_here_`), see mlplatform.schemas."""
        from .schemas import SchemaEntry, check_schema

        check_schema(schema, f"plugin {self.source!r}, schema {group}/{name}")
        self.config_schemas.append(SchemaEntry(group, name, schema, self.source))

    def commit(self, registry: Registry) -> list[Entry]:
        for schema in self.config_schemas:
            existing = registry.config_schemas.get((schema.group, schema.name))
            if existing is not None:
                raise PluginError(
                    f"config schema {schema.group}/{schema.name} is registered by both "
                    f"{existing.source!r} and {schema.source!r}",
                    "uninstall one of them, or disable one with MLPLATFORM_DISABLE_PLUGINS",
                )
        added: list[Entry] = []
        try:
            for entry in self.staged:
                registry.add(entry)
                added.append(entry)
        except PluginError:
            for entry in added:
                del registry.entries[entry.kind][entry.name]
            raise
        registry.config_packages.extend((self.source, pkg) for pkg in self.config_packages)
        for schema in self.config_schemas:
            registry.config_schemas[(schema.group, schema.name)] = schema
        return added
