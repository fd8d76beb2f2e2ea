"""The real command line in a subprocess: Hydra conventions and clear errors with exit code 2."""

from __future__ import annotations

from pathlib import Path


def test_no_arguments_runs_the_default_job(cli):
    # with only the core loaded, the default job is the plugin listing
    result = cli(env={"MLPLATFORM_LOAD_PLUGINS": ""})
    assert result.returncode == 0, result.stderr
    assert "Installed mlplatform plugins" in result.stdout


def test_cfg_job_prints_the_composed_config_without_running(cli, tmp_path):
    result = cli("job=example", "greeting=shout", "job.who=ada", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "name: shout" in result.stdout and "who: ada" in result.stdout
    assert "HELLO" not in result.stdout


def test_help_lists_config_groups_from_plugins(cli):
    result = cli("--help")
    assert result.returncode == 0
    assert "greeting: plain, shout" in result.stdout
    assert "job: " in result.stdout and "example" in result.stdout


def test_output_goes_to_the_hydra_run_dir_without_chdir(cli, tmp_path):
    run_dir = tmp_path / "my-run"
    result = cli("job=example", "job.who=ada", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    assert (run_dir / "greeting.txt").read_text() == "Hello, ada!\n"
    assert (run_dir / ".hydra" / "config.yaml").is_file()


def test_multirun_runs_every_combination(cli, tmp_path):
    sweep = tmp_path / "sweep"
    result = cli("-m", "job=example", "greeting=plain,shout", "job.who=ada", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    texts = sorted(p.read_text() for p in sweep.glob("*/greeting.txt"))
    assert texts == ["HELLO, ADA!\n", "Hello, ada!\n"]


def _assert_bad_input(result, *needles):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_job(cli):
    _assert_bad_input(cli("job=exampel"), "unknown job 'exampel'", "did you mean job=example?")


def test_unknown_component_name(cli):
    _assert_bad_input(
        cli("job=example", "greeting=shuot", "job.who=x"),
        "unknown greeting 'shuot'", "available: plain, shout", "greeting=shout",
    )


def test_malformed_override(cli):
    _assert_bad_input(cli("job=example", "job.who=[unclosed"), "job.who=[unclosed")


def test_missing_required_option(cli):
    _assert_bad_input(cli("job=example"), "missing required option(s): job.who", "job.who=VALUE")


def test_standard_job_without_its_plugin_says_so(cli):
    only_example = {"MLPLATFORM_LOAD_PLUGINS": "example"}  # whatever else is installed
    _assert_bad_input(
        cli("job=infer", env=only_example),
        "no installed plugin provides the 'infer' job", "plugins/managers",
    )


def test_train_without_a_trainer_is_a_clear_error(cli):
    _assert_bad_input(cli("job=train"), "trainer")


def test_verbose_keeps_the_traceback(cli):
    result = cli("job=example", "--verbose")  # job.who is missing: bad input
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "job.who" in result.stderr
    result = cli("job=example", "hydra.verbose=true")
    assert "Traceback" in result.stderr


def test_run_dir_default_is_under_the_working_directory(cli, tmp_path: Path):
    assert cli("job=example", "job.who=ada").returncode == 0
    assert list(tmp_path.glob("outputs/*/*/greeting.txt"))
