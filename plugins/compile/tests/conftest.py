"""Shared fixtures: one session cache dir and one AOTInductor build of the tiny VAE decoder that
every slow test reuses (compiling on 2 CPU cores takes about a minute)."""

from __future__ import annotations

import os

import pytest

TINY_DECODE = dict(
    hf_hub="builtin:tiny_vae",
    random_weights=True,
    label="test",
    build_kwargs={"batch_size": [1, 3], "resolution": [32, 64]},
    benchmark_runs=1,
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
