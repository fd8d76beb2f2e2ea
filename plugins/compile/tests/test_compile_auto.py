"""backend=auto without compiling: a candidate that cannot run here is recorded with its reason
and eager wins the race (the full race through the CLI is in test_compile_cli.py)."""

from __future__ import annotations

import pytest
import torch
from mlplatform_compile import build, load_module

from mlplatform.errors import ConfigError


def test_unavailable_candidates_are_recorded_and_eager_wins(compile_cache):
    result = build(
        "clip_text",
        "auto",
        backend_options={"candidates": ["aitemplate"]},
        hf_hub="builtin:tiny_clip_text",
        random_weights=True,
        build_kwargs={"batch_size": [1, 2], "sequence_length": [4, 8]},
        benchmark_runs=1,
        benchmark_shape={"sequence": 6},
        cache_dir=compile_cache,
    )
    auto = result.manifest["backend_extra"]["auto"]
    assert auto["race"]["aitemplate"]["status"] == "unavailable"
    assert "cannot run here" in auto["race"]["aitemplate"]["reason"]
    assert auto["winner"] == "eager" and auto["race"]["eager"]["ms"] > 0
    # raced at the benchmark shape (job.benchmark_shape; batch at its minimum), race_runs rounds
    assert auto["sizes"] == {"batch": 1, "sequence": 6} == result.manifest["latency"]["sizes"]
    assert auto["runs"] >= 5 and len(auto["race"]["eager"]["runs_ms"]) == auto["runs"]
    # reloads as eager (needs the model's code), with the same outputs
    inputs = result.example_inputs({"batch": 1, "sequence": 5})
    expected = result.eager_module(inputs)["last_hidden_state"]
    got = load_module(result.artifact_dir)(inputs)["last_hidden_state"]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"candidates": []}, "empty"),
        ({"candidates": ["auto"]}, "cannot race itself"),
        ({"candidates": ["onnxruntime"], "candidate_options": {"aot_inductor": {}}}, "not candidates"),
    ],
)
def test_bad_auto_options_are_refused(options, message):
    from mlplatform_compile.backends.auto import AutoBackend

    with pytest.raises(ConfigError, match=message):
        AutoBackend(**options)


def test_benchmark_shape_defaults_to_typical_and_is_checked():
    from mlplatform_compile import builder_class

    def builder(**shape):
        return builder_class("vae_decode")(
            hf_hub="builtin:tiny_vae", random_weights=True, backend="eager", benchmark_shape=shape,
            build_kwargs={"batch_size": [1, 3], "resolution": [32, 64],
                          "profiles": [{"batch_size": 1, "resolution": 48}]},
        )

    typical = builder()
    # batch at its minimum, latents at the middle of 16..32
    assert typical.benchmark_sizes() == {"batch": 1, "height": 24, "width": 24}
    chosen = builder(height=16, width=32)
    assert chosen.benchmark_sizes() == {"batch": 1, "height": 16, "width": 32}
    # a profile that does not hold the benchmark shape is timed at its own shape
    (profile,) = chosen.profiles()
    assert chosen.benchmark_sizes(profile.specs) == {"batch": 1, "height": 24, "width": 24}
    with pytest.raises(ConfigError, match="outside the build range"):
        builder(height=40).artifact_key()
    with pytest.raises(ConfigError, match="does not have"):
        builder(sequence=4).artifact_key()


@pytest.mark.parametrize(("second_ms", "rounds"), [(10.2, 6), (30.0, 3)])
def test_race_runs_more_rounds_when_the_two_fastest_are_close(second_ms, rounds):
    """On shared cores a close race is re-run before it is decided; a clear one is not."""
    import time

    from mlplatform_compile.backends.auto import AutoBackend

    def sleeper(ms):
        return lambda *inputs: time.sleep(ms / 1e3)

    backend = AutoBackend(candidates=["onnxruntime"], race_runs=3, race_margin=0.05)
    runners = {"eager": sleeper(50.0), "a": sleeper(10.0), "b": sleeper(second_ms)}
    samples = backend._race(list(runners), runners, (torch.zeros(1),))
    assert {name: len(runs) for name, runs in samples.items()} == dict.fromkeys(runners, rounds)
    if rounds == 3:  # a clear race: the faster one wins
        assert sorted(samples["a"])[1] < sorted(samples["b"])[1]  # medians
