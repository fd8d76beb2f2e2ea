"""Every option of every config group the installed plugins ship is backed by a typed schema,
and the schema mechanism plugins use rejects what it should."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
from omegaconf import OmegaConf

from mlplatform.api import ConfigError, from_options, to_schema
from mlplatform.config import PRESET_GROUP, available_choices
from mlplatform.plugins import get_host
from mlplatform.testing import compose_config


def options():
    choices = available_choices(get_host())
    return [
        (group, option)
        for group, names in sorted(choices.items())
        if group != PRESET_GROUP  # presets are overrides of typed groups, not a group node
        for option in sorted(names)
    ]


def test_the_installed_plugins_ship_groups():
    groups = {group for group, _ in options()}
    assert {"job", "builder", "backend", "greeting"} <= groups


@pytest.mark.parametrize(("group", "option"), options())
def test_every_option_is_typed(group, option):
    if (group, option) == ("job", "train"):  # needs trainer=NAME, and no trainer is installed
        with pytest.raises(Exception, match="You must specify 'trainer'"):
            compose_config(["job=train"])
        assert ("job", "train") in get_host().registry.config_schemas
        return
    overrides = [f"job={option}"] if group == "job" else ["job=plugins", f"+{group}={option}"]
    cfg = compose_config(overrides)
    schema = OmegaConf.get_type(cfg, group)
    assert dataclasses.is_dataclass(schema), f"{group}={option} has no schema ({schema})"
    assert cfg[group].name == option  # `name` dispatches to the registered component
    missing = OmegaConf.missing_keys(cfg[group])  # ??? marks options the user must give
    if missing:
        with pytest.raises(ConfigError, match="missing required option"):
            to_schema(cfg[group], group)
    else:
        assert isinstance(to_schema(cfg[group], group), schema)


def test_core_keys_are_typed():
    from mlplatform.config import explain_composition_error

    cfg = compose_config(["job=plugins", "seed=7", "dtype=bfloat16"])
    assert cfg.seed == 7 and cfg.dtype == "bfloat16" and cfg.device == "auto"
    with pytest.raises(Exception) as info:
        compose_config(["job=plugins", "seed=abc"])
    explained = explain_composition_error(info.value)
    assert explained is not None and "option seed got 'abc', expected int" in explained.problem


@dataclass
class Inner:
    size: int = 1


@dataclass
class Options:
    name: str = "???"
    flag: bool = False
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_from_options_checks_python_values_like_hydra():
    assert from_options(Options, {"name": "x", "flag": "no"}, "thing").flag is False
    with pytest.raises(ConfigError, match="option flag got 'maybe', expected bool"):
        from_options(Options, {"name": "x", "flag": "maybe"}, "thing")
    with pytest.raises(ConfigError, match="unknown option 'inner.sise'.*did you mean 'size'"):
        from_options(Options, {"name": "x", "inner": {"sise": 2}}, "thing")
    with pytest.raises(ConfigError, match="missing required option thing.name"):
        from_options(Options, {}, "thing")


def test_to_schema_refuses_keys_added_with_plus_and_untyped_nodes():
    node = OmegaConf.structured(Options(name="x"))
    OmegaConf.update(node, "extra", 1, force_add=True)  # what `+thing.extra=1` does
    with pytest.raises(ConfigError, match="unknown option thing.extra"):
        to_schema(node, "thing")
    with pytest.raises(ConfigError, match="has no typed schema"):
        to_schema(OmegaConf.create({"name": "x"}), "thing")


def test_a_schema_must_be_a_dataclass():
    from mlplatform.registry import Registrar

    with pytest.raises(ConfigError, match="not a dataclass"):
        Registrar("someone").add_config_schema("thing", "x", dict)


@dataclass
class WithFreeFormOptions:
    name: str = "x"
    options: dict[str, float] = dataclasses.field(default_factory=dict)
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_dict_fields_accept_new_keys_while_typed_fields_stay_closed():
    from mlplatform.schemas import open_free_form_dicts

    root = OmegaConf.create({"group": open_free_form_dicts(WithFreeFormOptions)})
    OmegaConf.set_struct(root, True)  # as Hydra composes it
    merged = OmegaConf.merge(root, {"group": {"options": {"margin": 0.5}}})
    assert to_schema(merged.group, "group").options == {"margin": 0.5}
    with pytest.raises(Exception, match="margin"):  # the dict's value type is still checked
        OmegaConf.merge(root, {"group": {"options": {"margin": "wide"}}})
    with pytest.raises(Exception, match="sise"):
        OmegaConf.merge(root, {"group": {"inner": {"sise": 2}}})


def test_a_plugin_dict_option_is_set_from_the_command_line():
    pytest.importorskip("mlplatform_embeddings")
    cfg = compose_config(["job=train", "trainer=embedding", "trainer.loss.options={margin: 0.5}"])
    assert cfg.trainer.loss.options == {"margin": 0.5}
    with pytest.raises(Exception, match="optons"):
        compose_config(["job=train", "trainer=embedding", "trainer.loss.optons={margin: 0.5}"])
