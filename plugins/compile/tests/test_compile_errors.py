"""Every user mistake of `job=build` through the real command line: a clear message naming the
problem and the fix, exit status 2, no traceback. Model files are real (save_pretrained of a tiny
config), broken the way users break them."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mlplatform.testing import compose_config


@pytest.fixture(scope="module")
def tiny_vae_dir(tmp_path_factory):
    """A tiny AutoencoderKL saved with save_pretrained (config.json + safetensors)."""
    from diffusers import AutoencoderKL
    from mlplatform_compile.model_source import load_shipped_config

    directory = tmp_path_factory.mktemp("models") / "tiny_vae"
    torch.manual_seed(0)
    AutoencoderKL.from_config(load_shipped_config("tiny_vae")).save_pretrained(directory)
    return directory


def build(tmp_path, *args, env=None, **popen):
    full_env = {
        **os.environ,
        "MLPLATFORM_COMPILE_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "mlplatform", "job=build", "backend=eager",
         "job.benchmark_runs=0", f"hydra.run.dir={tmp_path / 'run'}", *args],
        capture_output=True, text=True, env=full_env, timeout=300, cwd=tmp_path, **popen,
    )


def assert_bad_input(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "mlplatform: error:" in proc.stderr and "fix:" in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr[-3000:])


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("seed=abc", ["option seed got 'abc'", "expected int"]),
        ("job.benchmark_runs=abc", ["option job.benchmark_runs got 'abc'", "expected int"]),
        ("job.tolerance=abc", ["option job.tolerance got 'abc'", "expected float or null"]),
        ("builder.random_weights=maybe", ["option builder.random_weights", "expected bool"]),
        ("backend=aot_inductor backend.freezing=2x", ["option backend.freezing", "expected bool"]),
        ("builder.build_kwargs.resolutio=64", ["unknown option builder.build_kwargs.resolutio",
                                               "did you mean 'resolution'?"]),
        ("+builder.colour=red", ["unknown option builder.colour"]),
        ("job.benchmark_runs=-1", ["job.benchmark_runs is -1"]),
        ("job.tolerance=0", ["job.tolerance is 0.0", "positive"]),
        ("backend=aot_inductor backend.winograd=maybe", ["winograd must be auto, true or false"]),
    ],
)
def test_wrong_types_and_unknown_keys(tmp_path, override, needles):
    assert_bad_input(build(tmp_path, *override.split()), *needles)


def test_booleans_mean_what_they_say():
    """`no` / `off` are false (Hydra's booleans), never `bool("no") == True`."""
    from mlplatform_compile.backends.aot_inductor import AOTInductorBackend

    from mlplatform.api import to_schema

    cfg = compose_config(
        ["job=build", "backend=aot_inductor", "builder.random_weights=no", "backend.freezing=off"]
    )
    builder, backend = to_schema(cfg.builder, "builder"), to_schema(cfg.backend, "backend")
    assert builder.random_weights is False and backend.freezing is False
    options = {k: v for k, v in vars(backend).items() if k != "name"}
    assert AOTInductorBackend(**options).inductor_configs()["freezing"] is False


def test_random_weights_no_is_really_false(tmp_path):
    # the shipped tiny config has no weights: with random_weights false it must be refused
    assert_bad_input(
        build(tmp_path, "builder.random_weights=no"), "random weights were not requested"
    )


def test_zero_vae_scale_factor(tmp_path):
    proc = build(
        tmp_path, "builder=unet", "builder.hf_hub=builtin:tiny_unet", "builder.random_weights=true",
        "builder.build_kwargs.resolution=[64,128]", "builder.build_kwargs.vae_scale_factor=0",
    )
    assert_bad_input(proc, "vae_scale_factor is 0")


def test_malformed_config_json(tmp_path, tiny_vae_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_vae_dir, model)
    (model / "config.json").write_text('{"block_out_channels": [32, 64],\n  "act_fn": }')
    proc = build(tmp_path, f"builder.hf_hub={model}", "builder.random_weights=false")
    assert_bad_input(proc, f"{model / 'config.json'}", "is not valid JSON (line 2")


def test_truncated_safetensors(tmp_path, tiny_vae_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_vae_dir, model)
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    proc = build(tmp_path, f"builder.hf_hub={model}", "builder.random_weights=false")
    assert_bad_input(proc, "could not load the model in", "re-download or re-save it")


def test_config_without_weights(tmp_path, tiny_vae_dir):
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(tiny_vae_dir / "config.json", model)
    proc = build(tmp_path, f"builder.hf_hub={model}", "builder.random_weights=false")
    assert_bad_input(proc, "could not load the model in", "config.json and its weights")


def test_manifest_missing_a_key_is_rebuilt_not_a_keyerror(tmp_path):
    first = build(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "build_summary.json").read_text())
    manifest_path = Path(summary["artifact"]) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["backend"]
    manifest_path.write_text(json.dumps(manifest))
    second = build(tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    logged = second.stdout + second.stderr  # Hydra's job logging writes to stdout
    assert "cached artifact is unusable, rebuilding it" in logged
    assert "has no 'backend'" in logged
    assert f"built: {summary['artifact']}" in second.stdout
    assert "backend" in json.loads(manifest_path.read_text())
    third = build(tmp_path)
    assert "reused cached artifact" in third.stdout, third.stdout + third.stderr[-2000:]


@contextlib.contextmanager
def immutable(directory: Path):
    """A directory nobody may write to: chmod for ordinary users; root ignores modes, so for root
    the immutable attribute (chattr +i, EPERM), where the filesystem supports it."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        yield
        directory.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(
        ["chattr", "+i", str(directory)], capture_output=True
    ).returncode:
        pytest.skip("running as root and chattr +i is not available here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def test_permission_denied_on_the_cache(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    with immutable(cache):
        proc = build(tmp_path)
    assert_bad_input(proc, "could not", str(cache), "not permitted", "writable")


@contextlib.contextmanager
def full_disk(directory: Path):
    """`directory` on a 4 KiB tmpfs (root), so the artifact's writes fail with ENOSPC; else a
    file-size limit on the child (EFBIG), the same failure as far as the writer can tell."""
    directory.mkdir()
    mounted = os.geteuid() == 0 and not subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(directory)], capture_output=True
    ).returncode
    try:
        yield {} if mounted else {"preexec_fn": _limit_file_size}
    finally:
        if mounted:
            subprocess.run(["umount", str(directory)], check=True)


def _limit_file_size():
    # with SIGXFSZ ignored the process gets EFBIG instead of being killed
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))


def test_disk_full_while_writing_the_artifact(tmp_path):
    cache = tmp_path / "cache"
    with full_disk(cache) as limits:
        proc = build(tmp_path, "hydra.output_subdir=null", "hydra/job_logging=stdout", **limits)
        leftovers = [p.name for p in cache.iterdir() if p.name.endswith(".staging")]
    assert_bad_input(proc, "free disk space")
    assert "No space left on device" in proc.stderr or "File too large" in proc.stderr
    assert leftovers == []  # the failed build removed its staging directory
