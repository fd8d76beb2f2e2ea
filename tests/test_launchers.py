"""Hydra launcher plugins through the real CLI: a `-m` sweep of the example job runs every
combination in processes other than the CLI's, each job in its own run dir under hydra.sweep.dir.

The launchers come with the `launchers` extra (`pip install -e .[dev,launchers]`, which
requirements-dev.txt installs); a test skips, saying which package is missing, only when its
launcher is not installed.

The example job cannot say which process ran it, so every sweep here adds a Hydra callback (a
module written to tmp_path, put on PYTHONPATH) that writes the job's pid and the launching CLI's
pid into each job's run dir. The basic-launcher test shows the probe tells the two cases apart.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

SWEEP = ("-m", "job=example", "greeting=plain,shout", "job.who=ada")
EXPECTED = {"plain": "Hello, ada!\n", "shout": "HELLO, ADA!\n"}

PROBE = '''
import json
import os
from pathlib import Path

from hydra.experimental.callback import Callback


class RecordProcess(Callback):
    """Made in the CLI process; pickled to wherever the launcher runs each job."""

    def __init__(self):
        self.launcher_pid = os.getpid()

    def on_job_end(self, config, job_return, **kwargs):
        out = Path(config.hydra.runtime.output_dir)
        record = {"pid": os.getpid(), "launcher_pid": self.launcher_pid}
        (out / "process.json").write_text(json.dumps(record))
'''


@pytest.fixture
def sweep(cli, tmp_path):
    """Run the example sweep with extra overrides; returns (result, sweep dir)."""
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    (probe_dir / "launcher_probe.py").write_text(PROBE)
    sweep_dir = tmp_path / "sweep"

    def _run(*overrides, env=None):
        result = cli(
            *SWEEP, *overrides,
            f"hydra.sweep.dir={sweep_dir}",
            "+hydra.callbacks.record_process._target_=launcher_probe.RecordProcess",
            env=env, extra_path=[probe_dir],
        )
        return result, sweep_dir

    return _run


def _job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent.parent for p in sweep_dir.glob("*/.hydra/hydra.yaml"))


def _check_sweep(result, sweep_dir: Path, launcher: str, target: str) -> list[dict]:
    """Every combination ran once, in its own run dir, with `launcher`; returns each job's
    process record."""
    assert result.returncode == 0, (result.stdout, result.stderr)
    multirun = OmegaConf.load(sweep_dir / "multirun.yaml")
    assert target in multirun.hydra.launcher._target_, multirun.hydra.launcher
    jobs = _job_dirs(sweep_dir)
    assert [p.name for p in jobs] == ["0", "1"], list(sweep_dir.iterdir())
    greetings, records = {}, []
    for job_dir in jobs:
        hydra_cfg = OmegaConf.load(job_dir / ".hydra" / "hydra.yaml").hydra
        assert target in hydra_cfg.launcher._target_, hydra_cfg.launcher
        assert hydra_cfg.runtime.choices["hydra/launcher"] == launcher
        assert hydra_cfg.runtime.output_dir == str(job_dir)
        greeting = hydra_cfg.runtime.choices["greeting"]
        assert (job_dir / "greeting.txt").read_text() == EXPECTED[greeting]
        assert OmegaConf.load(job_dir / ".hydra" / "config.yaml").job.who == "ada"
        greetings[greeting] = job_dir.name
        records.append(
            {**json.loads((job_dir / "process.json").read_text()), "job_id": hydra_cfg.job.id}
        )
    assert set(greetings) == set(EXPECTED), greetings
    return records


def _assert_out_of_process(records: list[dict]) -> None:
    for record in records:
        assert record["pid"] != record["launcher_pid"], record


def test_basic_launcher_runs_jobs_in_the_cli_process(sweep):
    # the control: Hydra's default launcher runs jobs one after another inside the CLI, and the
    # probe sees that; the launchers below must not
    result, sweep_dir = sweep()
    records = _check_sweep(result, sweep_dir, "basic", "BasicLauncher")
    assert all(r["pid"] == r["launcher_pid"] for r in records), records


def test_joblib_launcher_runs_every_combination_in_worker_processes(sweep):
    pytest.importorskip(
        "hydra_plugins.hydra_joblib_launcher",
        reason="hydra-joblib-launcher is not installed (pip install -e .[launchers])",
    )
    result, sweep_dir = sweep("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    records = _check_sweep(result, sweep_dir, "joblib", "hydra_joblib_launcher.joblib_launcher.JoblibLauncher")
    _assert_out_of_process(records)
    for job_dir in _job_dirs(sweep_dir):
        assert OmegaConf.load(job_dir / ".hydra" / "hydra.yaml").hydra.launcher.n_jobs == 2
    assert "Joblib.Parallel(n_jobs=2" in result.stderr + result.stdout


@pytest.fixture
def ray_temp_dir():
    # short (Ray's unix sockets live under it) and private to the test, removed afterwards
    path = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_ray_launcher_runs_every_combination_on_a_local_ray(sweep, ray_temp_dir):
    pytest.importorskip(
        "hydra_plugins.hydra_ray_launcher",
        reason="hydra-ray-launcher is not installed (pip install -e .[launchers])",
    )
    # no address: the launcher starts a local Ray with 2 CPUs and stops it when the sweep ends
    result, sweep_dir = sweep(
        "hydra/launcher=ray",
        "+hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.init.include_dashboard=false",
        f"+hydra.launcher.ray.init._temp_dir={ray_temp_dir}",
        env={"RAY_USAGE_STATS_ENABLED": "0"},
    )
    records = _check_sweep(result, sweep_dir, "ray", "hydra_ray_launcher.ray_launcher.RayLauncher")
    _assert_out_of_process(records)
    assert "Started a local Ray instance" in result.stderr + result.stdout


def test_submitit_local_launcher_runs_every_combination_as_subprocesses(sweep):
    pytest.importorskip(
        "hydra_plugins.hydra_submitit_launcher",
        reason="hydra-submitit-launcher is not installed (pip install -e .[launchers])",
    )
    result, sweep_dir = sweep("hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5")
    records = _check_sweep(
        result, sweep_dir, "submitit_local", "hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    )
    _assert_out_of_process(records)
    # submitit's local executor starts one subprocess per job; the job id is that subprocess's
    # pid (the job runs in a child of it) and names the job's folder of logs and pickles
    assert len({r["pid"] for r in records}) == len(records), records
    assert len({r["job_id"] for r in records}) == len(records), records
    for record in records:
        assert record["job_id"].isdigit(), record
        submitit_dir = sweep_dir / ".submitit" / record["job_id"]
        assert (submitit_dir / f"{record['job_id']}_0_result.pkl").is_file(), submitit_dir


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_bad_input_in_a_launched_job_is_reported_with_status_2(cli, tmp_path, launcher):
    pytest.importorskip(
        f"hydra_plugins.hydra_{launcher.split('_')[0]}_launcher",
        reason=f"the {launcher} launcher is not installed (pip install -e .[launchers])",
    )
    result = cli("-m", "job=example", "greeting=plain,shout", f"hydra/launcher={launcher}",
                 f"hydra.sweep.dir={tmp_path / 's'}")  # job.who is missing: bad input
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "missing required option(s): job.who" in result.stderr
    assert "Traceback" not in result.stderr
