"""Discovery through real entry points: good, broken, duplicate and selected plugins."""

from __future__ import annotations

import json

from mlplatform.testing import make_distribution

GOOD_PLUGIN = """
from mlplatform import hookimpl

def run(cfg):
    print("thing job ran")

@hookimpl
def register_jobs(registry):
    registry.add_job("thing", run, "a job from a test plugin")

@hookimpl
def register_builders(registry):
    registry.add("builder", "thing_builder", object)
"""


def _plugins_json(result):
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout[result.stdout.index("["):])}


def test_broken_plugin_is_reported_and_the_rest_keep_working(cli, tmp_path):
    site = make_distribution(
        tmp_path / "site", "broken-plugin",
        {"broken_plugin": "raise ImportError('needs libfoo, which is not installed')"},
        {"broken": "broken_plugin"},
    )
    result = cli("job=plugins", "job.json=true", extra_path=[site])
    rows = _plugins_json(result)
    assert rows["broken"]["status"] == "failed"
    assert "needs libfoo" in rows["broken"]["error"]
    assert rows["example"]["status"] == "loaded"
    assert "plugin 'broken'" in result.stderr and "MLPLATFORM_STRICT_PLUGINS" in result.stderr
    # the host keeps working for other jobs too
    assert cli("job=example", "job.who=x", extra_path=[site]).returncode == 0


def test_strict_mode_makes_a_broken_plugin_fatal(cli, tmp_path):
    site = make_distribution(
        tmp_path / "site", "broken-plugin",
        {"broken_plugin": "raise ImportError('needs libfoo')"}, {"broken": "broken_plugin"},
    )
    result = cli("job=plugins", env={"MLPLATFORM_STRICT_PLUGINS": "1"}, extra_path=[site])
    assert result.returncode == 2
    assert "plugin 'broken' from broken-plugin 0.1.0 failed to load" in result.stderr
    assert "Traceback" not in result.stderr


def test_misspelled_hook_is_caught(cli, tmp_path):
    source = "from mlplatform import hookimpl\n@hookimpl\ndef register_bulders(registry):\n    pass\n"
    site = make_distribution(tmp_path / "site", "typo-plugin", {"typo_plugin": source}, {"typo": "typo_plugin"})
    rows = _plugins_json(cli("job=plugins", "job.json=true", extra_path=[site]))
    assert rows["typo"]["status"] == "failed"
    assert "register_bulders" in rows["typo"]["error"]


def test_a_plugin_job_is_discovered_listed_and_runnable(cli, tmp_path):
    site = make_distribution(tmp_path / "site", "thing-plugin", {"thing_plugin": GOOD_PLUGIN}, {"thing": "thing_plugin"})
    rows = _plugins_json(cli("job=plugins", "job.json=true", extra_path=[site]))
    assert sorted(rows["thing"]["registered"]) == ["builder:thing_builder", "job:thing"]
    assert rows["thing"]["distribution"] == "thing-plugin"
    # a job without a config group of its own still runs when selected by name
    result = cli("job=thing", extra_path=[site])
    assert "thing job ran" in result.stdout, result.stderr


def test_duplicate_names_across_distributions_are_refused(cli, tmp_path):
    dup = GOOD_PLUGIN.replace('"thing"', '"example"')
    site = make_distribution(tmp_path / "site", "zz-dup-plugin", {"zz_dup": dup}, {"zz_dup": "zz_dup"})
    rows = _plugins_json(cli("job=plugins", "job.json=true", extra_path=[site]))
    assert rows["zz_dup"]["status"] == "failed"
    assert "'mlplatform-example'" in rows["zz_dup"]["error"]
    assert "'zz-dup-plugin'" in rows["zz_dup"]["error"]
    assert rows["zz_dup"]["registered"] == []


def test_load_and_disable_switches(cli):
    rows = _plugins_json(cli("job=plugins", "job.json=true", env={"MLPLATFORM_LOAD_PLUGINS": ""}))
    assert rows["example"]["status"] == "disabled"
    assert rows["mlplatform"]["status"] == "loaded"  # the core itself always loads
    rows = _plugins_json(cli("job=plugins", "job.json=true", env={"MLPLATFORM_LOAD_PLUGINS": "example"}))
    assert rows["example"]["status"] == "loaded"
    rows = _plugins_json(cli("job=plugins", "job.json=true", env={"MLPLATFORM_DISABLE_PLUGINS": "example"}))
    assert rows["example"]["status"] == "disabled"
    result = cli("job=example", "job.who=x", env={"MLPLATFORM_DISABLE_PLUGINS": "example"})
    assert result.returncode == 2
