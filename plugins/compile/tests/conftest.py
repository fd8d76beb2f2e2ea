"""Shared fixtures: one session cache dir and one AOTInductor build of the tiny VAE decoder (a
ranged package plus one static shape profile) that every slow test reuses (compiling on 2 CPU
cores takes about a minute)."""

from __future__ import annotations

import os

import pytest

TINY_DECODE = dict(
    hf_hub="builtin:tiny_vae",
    random_weights=True,
    label="test",
    # one static shape profile (1x4x24x24 latents) beside the ranged package; never routed to
    # eager, so the artifact stays self-contained whatever one noisy timing run says
    build_kwargs={
        "batch_size": [1, 3],
        "resolution": [32, 64],
        "profiles": [{"batch_size": 1, "resolution": 48}],
    },
    benchmark_runs=1,
    route_to_eager="never",
)


@pytest.fixture(scope="session")
def tiny_decode():
    return dict(TINY_DECODE)


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("compile_cache")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(path / "_compiler_cache" / "inductor"))
    return path


@pytest.fixture(scope="session")
def aot_vae(compile_cache):
    from mlplatform_compile import build

    return build("vae_decode", "aot_inductor", cache_dir=compile_cache, **TINY_DECODE)


STATE_DICT_FILE = "weights.pt"


def _state_dict_backend():
    import copy

    import torch
    from mlplatform_compile import Backend

    class StateDictBackend(Backend):
        """A test backend whose artifact has a real payload file and no compiler: the eager
        module's state dict, saved with torch.save and loaded back into the rebuilt model."""

        name = "test_state_dict"
        payload = STATE_DICT_FILE

        def compile(self, request):
            torch.save(request.module.state_dict(), request.staging_dir / STATE_DICT_FILE)
            # verify what was written, as aot_inductor does
            return self.load(
                request.staging_dir, {}, request.device, lambda: copy.deepcopy(request.module)
            )

        def load(self, artifact_dir, manifest, device, rebuild):
            module = rebuild()
            weights = torch.load(
                artifact_dir / STATE_DICT_FILE, map_location=device, weights_only=True
            )
            module.load_state_dict(weights)
            return module

    return StateDictBackend


@pytest.fixture
def state_dict_backend(monkeypatch):
    """The StateDictBackend class, registered as backend `test_state_dict` for this test (so
    `load_module` and cached builds find it by the name in the manifest)."""
    import dataclasses

    from mlplatform.api import get_registry

    cls = _state_dict_backend()
    backends = get_registry().entries["backend"]
    entry = dataclasses.replace(backends["eager"], name=cls.name, obj=cls, source="tests")
    monkeypatch.setitem(backends, cls.name, entry)
    return cls



@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With MLPLATFORM_REQUIRE_GPU_BACKENDS set (the GPU CI job), a gpu-marked test that skips
    fails instead: that job exists to run them, and a skip would hide a missing backend."""
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("MLPLATFORM_REQUIRE_GPU_BACKENDS")
        and "gpu" in item.keywords
    ):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"gpu test skipped in the GPU job (MLPLATFORM_REQUIRE_GPU_BACKENDS): {reason}"
