"""Every hookspec is documented with its exact signature, and every hook really registers."""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

from mlplatform import hookimpl, hookspecs
from mlplatform.plugins import load_plugins

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugin-authors.md"


def _specs():
    return {
        name: fn for name, fn in vars(hookspecs).items()
        if callable(fn) and hasattr(fn, "mlplatform_spec")
    }


def test_docs_and_hookspecs_agree():
    documented = dict(re.findall(r"^### `((register_\w+)\(.*?\))`", DOCS.read_text(), re.M))
    documented = {name: signature for signature, name in documented.items()}
    specs = {name: f"{name}{inspect.signature(fn)}" for name, fn in _specs().items()}
    assert documented == specs


def test_every_hook_registers_through_a_real_plugin(monkeypatch):
    monkeypatch.setenv("MLPLATFORM_LOAD_PLUGINS", "")
    plugin = types.ModuleType("every_hook_plugin")
    kinds = {
        "register_builders": "builder",
        "register_compile_backends": "backend",
        "register_model_managers": "manager",
        "register_trainers": "trainer",
        "register_text_diffusion_components": "eps_model",
        "register_components": "widget",
    }
    for hook_name in _specs():
        if hook_name == "register_jobs":
            def impl(registry):
                registry.add_job("every_hook_job", lambda cfg: "ran")
        elif hook_name == "register_config_groups":
            def impl(registry):
                registry.add_config_package("every_hook_plugin_conf")
        else:
            def impl(registry, _kind=kinds[hook_name], _name=f"from_{hook_name}"):
                registry.add(_kind, _name, object())
        impl.__name__ = hook_name
        setattr(plugin, hook_name, hookimpl(impl))
    host = load_plugins(extra_modules=[plugin])
    record = host.records[-1]
    assert record.status == "loaded", record.error
    assert host.registry.job("every_hook_job").run(None) == "ran"
    assert ("every_hook_plugin", "every_hook_plugin_conf") in host.registry.config_packages
    for hook_name, kind in kinds.items():
        assert host.registry.entry(kind, f"from_{hook_name}").source == "every_hook_plugin"
    assert set(kinds) | {"register_jobs", "register_config_groups"} == set(_specs())
