"""Plugins reach the core only through its declared public API, `mlplatform.api`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mlplatform
import mlplatform.api

REPO = Path(__file__).resolve().parents[1]
PUBLIC_MODULES = {"mlplatform.api"}


def core_imports_beyond_the_api(source: str) -> list[str]:
    """`mlplatform.<module>` imports other than the public API, and names imported from the
    `mlplatform` package that it does not re-export."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "mlplatform":
                found += [
                    f"from mlplatform import {alias.name}"
                    for alias in node.names
                    if alias.name not in mlplatform.__all__
                ]
                continue
            modules = [node.module]
        else:
            continue
        found += [
            m for m in modules if m.startswith("mlplatform.") and m not in PUBLIC_MODULES
        ]
    return found


def plugin_sources() -> list[Path]:
    return sorted((REPO / "plugins").glob("*/src/**/*.py"))


def test_the_checker_catches_private_imports():
    bad = (
        "from mlplatform.plugins import get_registry\n"
        "import mlplatform.artifacts\n"
        "from mlplatform import registry\n"
        "def f():\n    from mlplatform.device import resolve_device\n"
    )
    assert core_imports_beyond_the_api(bad) == [
        "mlplatform.plugins", "mlplatform.artifacts", "from mlplatform import registry",
        "mlplatform.device",
    ]
    good = "from mlplatform.api import get_registry\nfrom mlplatform import hookimpl\n"
    assert core_imports_beyond_the_api(good) == []


def test_plugins_import_only_the_public_api():
    sources = plugin_sources()
    assert len(sources) > 20  # the compile and example plugins are scanned
    offenders = {
        str(path.relative_to(REPO)): found
        for path in sources
        if (found := core_imports_beyond_the_api(path.read_text()))
    }
    assert offenders == {}, f"plugins must import the core through mlplatform.api: {offenders}"


def test_every_public_name_exists_and_the_package_reexports_hooks_and_errors():
    for name in mlplatform.api.__all__:
        assert hasattr(mlplatform.api, name), name
    for name in set(mlplatform.__all__) - {"__version__"}:
        assert getattr(mlplatform, name) is getattr(mlplatform.api, name), name


def test_the_public_api_does_not_import_torch():
    code = "import sys, mlplatform.api; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
