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
        cache_dir=compile_cache,
    )
    auto = result.manifest["backend_extra"]["auto"]
    assert auto["race"]["aitemplate"]["status"] == "unavailable"
    assert "cannot run here" in auto["race"]["aitemplate"]["reason"]
    assert auto["winner"] == "eager" and auto["race"]["eager"]["ms"] > 0
    assert auto["sizes"] == {"batch": 2, "sequence": 8}  # the range's largest shape
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
