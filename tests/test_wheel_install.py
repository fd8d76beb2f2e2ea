"""A plugin installed from a regular (non-editable) wheel is found, with its config groups."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_example_plugin_from_a_wheel_brings_its_config_groups(cli, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(REPO / "plugins" / "example", source, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    # a config option that exists only in this wheel proves where Hydra reads the groups from
    (source / "src/mlplatform_example/conf/greeting/wheel_only.yaml").write_text(
        "defaults:\n  - /schema/greeting/base@_here_\n  - _self_\nname: shout\n"
    )
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, source], check=True)
    wheel = next(wheels.glob("mlplatform_example-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True)
    assert not (site / "mlplatform_example" / "conf" / "greeting" / "wheel_only.yaml").is_symlink()

    result = cli("job=example", "greeting=wheel_only", "job.who=wheel", extra_path=[site])
    assert result.returncode == 0, result.stderr
    assert "HELLO, WHEEL!" in result.stdout
    searchpath = cli("--info", "searchpath", extra_path=[site]).stdout
    assert "pkg://mlplatform_example.conf" in searchpath
    where = subprocess.run(
        [sys.executable, "-c", "import mlplatform_example; print(mlplatform_example.__file__)"],
        env={"PYTHONPATH": str(site)}, capture_output=True, text=True, check=True,
    ).stdout
    assert where.startswith(str(site))
