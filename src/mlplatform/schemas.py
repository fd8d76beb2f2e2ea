"""Typed configuration: the schemas of the core's config groups and the mechanism plugins share.

Every option of every config group is backed by a dataclass (a Hydra structured config). The
dataclass is stored in Hydra's ConfigStore under `schema/<group>/<name>` and the option's YAML
names it first in its defaults list, so Hydra itself rejects a wrong type or an unknown key at
composition, before any job runs:

    # builder/vae_decode.yaml
    defaults:
      - /schema/builder/vae_decode@_here_
      - _self_
    name: vae_decode
    ...

A job's YAML is `@package _global_`, so its schema goes to the `job` package instead:
`- /schema/job/build@job`. Plugins register their schemas with
`registry.add_config_schema(group, name, DataclassType)` from `register_config_groups`.

Booleans accept what YAML and Hydra accept (true/false, and OmegaConf's yes/no/on/off/1/0 on the
command line); anything else is an error naming the key, the value and the expected type.
Jobs read their options with `to_schema(cfg.job)`, which returns the dataclass instance, never
re-parsing a value by hand.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .registry import closest

SCHEMA_GROUP = "schema"


@dataclass
class CoreConfig:
    """The top-level options every job shares."""

    # auto (CUDA when present, else CPU), cpu, cuda or cuda:N
    device: str = "auto"
    # float32, float16 or bfloat16 (fp16 on CPU falls back to float32 with a warning)
    dtype: str = "float32"
    # seeds random weights, example inputs and training
    seed: int = 0


@dataclass
class JobConfig:
    """The base of every job's options: `name` is the registered job it runs."""

    name: str = "???"


@dataclass
class ComponentConfig:
    """The base of a registered component's options (builder, backend, trainer, ...): `name` is
    the registry name it dispatches to."""

    name: str = "???"


@dataclass
class PluginsJobConfig(JobConfig):
    # true prints machine-readable JSON instead of the table
    json: bool = False


@dataclass
class TrainJobConfig(JobConfig):
    """`job=train`: the trainer group (trainer=NAME) picks the trainer and holds its options."""


@dataclass(frozen=True)
class SchemaEntry:
    group: str
    name: str
    node: type
    source: str

    @property
    def path(self) -> str:
        return f"{SCHEMA_GROUP}/{self.group}"


def check_schema(node: Any, where: str) -> None:
    """A schema must be a dataclass type (Hydra's structured configs)."""
    if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
        raise ConfigError(
            f"{where}: config schema {node!r} is not a dataclass type",
            "pass a @dataclass class (see docs/plugin-authors.md, 'Config schemas')",
        )


def store_schema(entry: SchemaEntry) -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group=entry.path, name=entry.name, node=open_free_form_dicts(entry.node))


def open_free_form_dicts(schema: type) -> Any:
    """The schema as an OmegaConf node whose plain `dict[str, ...]` fields accept new keys.

    Hydra's struct mode would otherwise refuse `group.options={key: value}` for a dict field
    (only `+group.options.key=value` got through); dataclass fields stay closed, so a misspelled
    option of a typed group is still refused."""
    from omegaconf import DictConfig, OmegaConf

    node = OmegaConf.structured(schema)

    def visit(config: Any) -> None:
        for key in config.keys():
            child = config._get_node(key)
            if not isinstance(child, DictConfig) or child._is_missing() or child._is_none():
                continue
            if dataclasses.is_dataclass(OmegaConf.get_type(child)):
                visit(child)
            else:
                OmegaConf.set_struct(child, False)

    visit(node)
    return node


def typed_primary_node(schema: type = CoreConfig) -> dict[str, Any]:
    """The schema's fields as typed OmegaConf nodes, for a primary config that must stay open to
    the keys plugins' groups add (a dataclass root would refuse them)."""
    from omegaconf import OmegaConf

    structured = OmegaConf.structured(schema)
    return {f.name: structured._get_node(f.name) for f in dataclasses.fields(schema)}


def _field_names(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def _unknown_keys(node: Any, prefix: str) -> list[tuple[str, type]]:
    """Keys in `node` (or nested typed nodes) that its schema does not declare (added with +)."""
    from omegaconf import DictConfig, OmegaConf

    found: list[tuple[str, type]] = []
    schema = OmegaConf.get_type(node)
    declared = set(_field_names(schema)) if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        child = node._get_node(key)
        full = f"{prefix}.{key}" if prefix else str(key)
        if declared is not None and key not in declared:
            found.append((full, schema))
        elif isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            found.extend(_unknown_keys(child, full))
    return found


def to_schema(node: Any, where: str) -> Any:
    """The dataclass instance behind a composed config node (e.g. `to_schema(cfg.job, "job")`).

    Refuses keys the schema does not declare (Hydra lets `+key=value` add them) and values still
    missing (`???`), naming the full key; a node without a schema is refused too, since its
    values would be untyped.
    """
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if not isinstance(node, DictConfig) or not dataclasses.is_dataclass(OmegaConf.get_type(node)):
        raise ConfigError(
            f"the {where!r} config has no typed schema",
            f"name a schema first in its defaults list (- /{SCHEMA_GROUP}/{where}/NAME@_here_); "
            "see docs/plugin-authors.md",
        )
    unknown = _unknown_keys(node, where)
    if unknown:
        key, schema = unknown[0]
        known = _field_names(schema)
        leaf = key.rsplit(".", 1)[-1]
        guess = closest(leaf, known)
        raise ConfigError(
            f"unknown option {key}: {schema.__name__} has no key {leaf!r} "
            f"(known: {', '.join(known)})" + (f"; did you mean {guess!r}?" if guess else ""),
            "remove it or fix its spelling; typed config groups accept only their declared keys",
        )
    try:
        return OmegaConf.to_object(node)
    except MissingMandatoryValue as exc:
        key = f"{where}.{exc.full_key}" if exc.full_key else where
        raise ConfigError(
            f"missing required option {key}", f"pass {key}=VALUE on the command line"
        ) from exc
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid {where} config: {exc.msg}", "check the option's type") from exc


def from_options(schema: type, options: Any, where: str) -> Any:
    """Validate keyword options from Python (not Hydra) against `schema` the way Hydra does, and
    return the dataclass instance: unknown keys, wrong types and missing values are ConfigErrors
    naming `where.key`, so the Python API and the command line accept exactly the same values."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    check_schema(schema, where)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), dict(options or {}))
    except ConfigKeyError as exc:
        owner = exc.object_type if dataclasses.is_dataclass(exc.object_type) else schema
        known = _field_names(owner)
        guess = closest(str(exc.key), known)
        raise ConfigError(
            f"{where}: unknown option {exc.full_key!r} (known: {', '.join(known)})"
            + (f"; did you mean {guess!r}?" if guess else ""),
            "remove it or fix its spelling",
        ) from exc
    except ValidationError as exc:
        expected = field_type(exc.object_type, exc.key)
        raise ConfigError(
            f"{where}: option {exc.full_key} got {exc.value!r}"
            + (f", expected {expected}" if expected else "")
            + f" ({exc.msg.splitlines()[0]})",
            "pass a value of the expected type",
        ) from exc
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{where}: {exc.msg.splitlines()[0]}", "check the options") from exc
    return to_schema(merged, where)


def type_name(annotation: Any) -> str:
    """A short human name for a schema field's type (`int`, `bool`, `float or null`, ...)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        names = [type_name(a) for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(names) + " or null"
    if origin in (list, typing.List):  # noqa: UP006 - typing.List is what older schemas use
        return "list"
    if origin in (dict, typing.Dict):  # noqa: UP006
        return "mapping"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def field_type(schema: Any, key: str) -> str | None:
    """The declared type of `schema.key`, or None when `schema` is not a dataclass."""
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        return None
    try:
        hints = typing.get_type_hints(schema)
    except Exception:  # a schema with unresolvable annotations: fall back to the raw string
        hints = {f.name: f.type for f in dataclasses.fields(schema)}
    return type_name(hints[key]) if key in hints else None


__all__ = [
    "SCHEMA_GROUP",
    "CoreConfig",
    "JobConfig",
    "ComponentConfig",
    "PluginsJobConfig",
    "TrainJobConfig",
    "SchemaEntry",
    "to_schema",
    "from_options",
]
