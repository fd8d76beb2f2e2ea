"""The compile cache shared by real processes: one build per artifact under its lock, leftovers of
a SIGKILLed build cleaned, reuse that re-verifies or refuses, keys that cover library versions.

A third-party plugin (installed as a distribution on PYTHONPATH, like any user's) adds the
`slow_state_dict` backend: it writes the weights into the artifact, then sleeps as long compiles
do ($SLOWPLUG_SECONDS, outside the artifact key), and can add a known relative error to its
outputs, so parity can pass or fail on purpose.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlplatform.testing import make_distribution

PLUGIN = '''
import os
import time
from dataclasses import dataclass

from mlplatform.api import hookimpl
from mlplatform_compile import Backend, BackendConfig


@dataclass
class SlowStateDictConfig(BackendConfig):
    noise: float = 0.0  # relative error added to every output


class SlowStateDictBackend(Backend):
    name = "slow_state_dict"
    description = "test backend: weights in the artifact, a slow compile, a chosen error"
    config_schema = SlowStateDictConfig

    def compile(self, request):
        import torch

        torch.save(request.module.state_dict(), request.staging_dir / "weights.pt")
        print(f"COMPILING in {request.staging_dir}", flush=True)
        time.sleep(float(os.environ.get("SLOWPLUG_SECONDS", "0")))
        return self._runner(request.module)

    def _runner(self, module):
        noise = self.options["noise"]

        def run(*inputs):
            return tuple(o + noise * o.abs().max() for o in module(*inputs))

        return run

    def load(self, artifact_dir, manifest, device, rebuild):
        import torch

        module = rebuild()
        module.load_state_dict(torch.load(artifact_dir / "weights.pt", weights_only=True))
        return self._runner(module)


@hookimpl
def register_compile_backends(registry):
    registry.add("backend", SlowStateDictBackend.name, SlowStateDictBackend)


@hookimpl
def register_config_groups(registry):
    registry.add_config_package("slowplug.conf")
    registry.add_config_schema("backend", "slow_state_dict", SlowStateDictConfig)
'''

BACKEND_YAML = """\
defaults:
  - /schema/backend/slow_state_dict@_here_
  - _self_

name: slow_state_dict
noise: 0.0
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    return make_distribution(
        tmp_path_factory.mktemp("site"),
        "slowplug",
        {"slowplug.__init__": "", "slowplug.conf.__init__": "", "slowplug.plugin": PLUGIN},
        {"slow": "slowplug.plugin"},
        files={"slowplug/conf/backend/slow_state_dict.yaml": BACKEND_YAML},
    )


@pytest.fixture
def cli(tmp_path, plugin_site):
    env = {
        **os.environ,
        "MLPLATFORM_COMPILE_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(plugin_site), os.environ.get("PYTHONPATH", "")]),
    }
    runs = iter(range(1000))

    def command(*args):
        run_dir = tmp_path / f"run{next(runs)}"
        flags = [a for a in args if a.startswith("-")]  # argparse wants them first
        return [
            sys.executable, "-m", "mlplatform", *flags, "job=build", "backend=slow_state_dict",
            "job.benchmark_runs=0", f"hydra.run.dir={run_dir}",
            *(a for a in args if not a.startswith("-")),
        ], run_dir

    def run(*args, seconds=0):
        argv, run_dir = command(*args)
        proc = subprocess.run(argv, env={**env, "SLOWPLUG_SECONDS": str(seconds)}, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        proc.run_dir = run_dir
        return proc

    def start(*args, seconds=0):
        argv, run_dir = command(*args)
        proc = subprocess.Popen(argv, env={**env, "SLOWPLUG_SECONDS": str(seconds)},
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        proc.run_dir = run_dir
        return proc

    run.start = start
    run.cache = tmp_path / "cache"
    return run


def summary_of(proc) -> dict:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((proc.run_dir / "build_summary.json").read_text())


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.endswith((".staging", ".old")))


def test_parallel_builds_of_one_artifact_compile_once(cli):
    first, second = cli.start(seconds=4), cli.start(seconds=4)
    outputs = [p.communicate(timeout=300)[0] for p in (first, second)]
    assert first.returncode == second.returncode == 0, outputs
    assert sum(out.count("COMPILING") for out in outputs) == 1, outputs
    summaries = [json.loads((p.run_dir / "build_summary.json").read_text()) for p in (first, second)]
    assert sorted(s["cached"] for s in summaries) == [False, True]
    assert summaries[0]["artifact"] == summaries[1]["artifact"]
    assert any("waiting for another process building" in out for out in outputs), outputs
    assert leftovers(cli.cache) == []


def test_sigkill_mid_build_leaves_staging_that_the_next_build_removes(cli):
    victim = cli.start(seconds=120)
    deadline = time.monotonic() + 240
    for line in victim.stdout:
        if "COMPILING" in line or time.monotonic() > deadline:
            break
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert leftovers(cli.cache), "the killed build should have left its staging directory"

    rebuilt = cli()
    summary = summary_of(rebuilt)
    assert summary["cached"] is False and summary["verified"] is True
    assert "leftover(s) of killed builds" in rebuilt.stdout + rebuilt.stderr
    assert leftovers(cli.cache) == []
    assert (Path(summary["artifact"]) / "weights.pt").is_file()


def test_an_unverified_artifact_is_reverified_before_reuse(cli):
    unverified = cli("backend.noise=1e-6", "job.verify=false")
    assert "NOT VERIFIED" in unverified.stdout and summary_of(unverified)["verified"] is False

    reused = cli("backend.noise=1e-6")
    summary = summary_of(reused)
    assert summary["cached"] is True and summary["verified"] is True
    assert "re-verified" in reused.stdout + reused.stderr
    assert 5e-7 < summary["max_relative_error"] < 2e-6  # the backend's known error, measured
    manifest = json.loads((Path(summary["artifact"]) / "manifest.json").read_text())
    assert manifest["parity"] and manifest["tolerance"] == 1e-4

    again = cli("backend.noise=1e-6")
    assert summary_of(again)["cached"] is True
    assert "re-verified" not in again.stdout + again.stderr  # its figures now suffice


@pytest.mark.parametrize("first_build", [["job.verify=false"], ["job.tolerance=0.1"]])
def test_an_artifact_above_the_requested_tolerance_is_never_reused(cli, first_build):
    loose = cli("backend.noise=1e-2", *first_build)
    assert summary_of(loose)["cached"] is False

    strict = cli("backend.noise=1e-2")
    assert strict.returncode == 2, strict.stdout[-2000:] + strict.stderr[-2000:]
    assert "above the float32 tolerance" in strict.stderr and "Traceback" not in strict.stderr
    assert "reused cached artifact" not in strict.stdout
    assert leftovers(cli.cache) == []


def test_a_parallel_sweep_shares_the_cache(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install -e .[launchers]")
    sweep = tmp_path / "sweep"
    proc = cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
               "job.benchmark_runs=0,1", f"hydra.sweep.dir={sweep}", seconds=4)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/build_summary.json"))]
    assert len(summaries) == 2
    assert sorted(s["cached"] for s in summaries) == [False, True]  # one built, one waited
    assert len({s["artifact"] for s in summaries}) == 1
    assert leftovers(cli.cache) == []


def test_the_key_covers_library_versions_and_format(monkeypatch, tmp_path):
    import importlib

    from mlplatform_compile import builder_class
    from mlplatform_compile.naming import key_hash

    # the module, not the `build` function the package exports under the same name
    pipeline = importlib.import_module("mlplatform_compile.build")

    def make():
        return builder_class("vae_decode")(
            hf_hub="builtin:tiny_vae", random_weights=True, backend="eager",
            build_kwargs={"batch_size": [1, 2], "resolution": [32, 48]},
            cache_dir=tmp_path, benchmark_runs=0,
        )

    before = key_hash(make().artifact_key())
    real = pipeline.library_versions()
    for library in ("diffusers", "transformers", "mlplatform-compile", "mlplatform"):
        monkeypatch.setattr(pipeline, "library_versions", lambda lib=library: {**real, lib: "0.0.0"})
        assert key_hash(make().artifact_key()) != before, library
    monkeypatch.undo()

    first = make()()
    manifest_path = first.artifact_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["manifest_format"] = 99  # written by a future version
    manifest_path.write_text(json.dumps(manifest))
    second = make()()
    assert second.cached is False
    assert json.loads(manifest_path.read_text())["manifest_format"] == 1
