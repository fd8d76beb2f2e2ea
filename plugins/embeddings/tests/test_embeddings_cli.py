"""`python -m mlplatform job=train trainer=embedding ...` through the real CLI in a subprocess,
and bad input answered with a clear error and exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlplatform.testing import run_cli

pytestmark = pytest.mark.slow  # the real CLI in subprocesses, training tiny models (about 45 s)


def _train(tmp_path, model_dir, data, *extra):
    return run_cli(
        "job=train", "trainer=embedding", f"trainer.model.model_name={model_dir}",
        f"trainer.data.train_file={data}", f"hydra.run.dir={tmp_path / 'run'}", *extra,
        cwd=tmp_path, timeout=300, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},  # tiny models
    )


def test_train_end_to_end_through_the_cli(tiny_bert, tmp_path, make_pairs, jsonl):
    data = jsonl(tmp_path / "train.jsonl", make_pairs(64))
    result = _train(tmp_path, tiny_bert, data, "trainer.batch_size=8", "trainer.max_steps=4",
                    "trainer.data.validation_split=0.25", "trainer.model.pooling=last_token",
                    "trainer.optim.scheduler=constant", "trainer.eval_every=2", "device=cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "after: nDCG@10=" in result.stdout and "exported model:" in result.stdout
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    labels = [(e["label"], e["step"]) for e in metrics["evaluations"]]
    assert metrics["steps"] == 4 and labels == [("before", 0), ("during", 2), ("after", 4)]
    assert "samples/s; peak RSS" in result.stdout
    assert (run / "training_curve.png").is_file()
    manifest = json.loads((run / "model" / "manifest.json").read_text())
    assert manifest["kind"] == "embedding-model" and manifest["pooling"] == "last_token"
    assert (run / "checkpoints" / "step-000004" / "manifest.json").is_file()


def _bad_inputs(tmp_path: Path, tiny_bert: Path, other_bert: Path, make_pairs, jsonl):
    good = jsonl(tmp_path / "good.jsonl", make_pairs(20))
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"query": "q1", "positive": "d1"}\n{"query": "q2", "positive": "d2"\n')
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"query": "q1", "positive": "d1"}\n{"query": "q2", "document": "d2"}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    from mlplatform_embeddings import train

    other = train({"model": {"model_name": str(other_bert)}, "data": {"train_file": str(good)},
                   "batch_size": 4, "max_steps": 1, "eval_before": False, "eval_after": False,
                   "export": False, "output_dir": str(tmp_path / "other")}, device="cpu")
    return {
        "unknown key": ((tiny_bert, good, "trainer.model.lora_rr=4"), "did you mean 'lora_r'"),
        "bad line": ((tiny_bert, bad_line), "bad.jsonl, line 2: not valid JSON"),
        "missing column": ((tiny_bert, missing), "missing.jsonl, line 2: no column 'positive'"),
        "empty data": ((tiny_bert, empty), "holds no records"),
        "batch too large": ((tiny_bert, good, "trainer.batch_size=64"), "larger than the training set"),
        "model dir missing": ((tmp_path / "no_model", good), "does not exist"),
        "other model's checkpoint": (
            (tiny_bert, good, f"trainer.resume_from={other['checkpoint']}"), "different model"),
    }


def test_bad_input_is_a_clear_error_with_exit_2(tiny_bert, other_bert, tmp_path, make_pairs, jsonl):
    cases = _bad_inputs(tmp_path, tiny_bert, other_bert, make_pairs, jsonl)
    failures = []
    for label, ((model_dir, data, *extra), expected) in cases.items():
        result = _train(tmp_path, model_dir, data, "trainer.batch_size=4", *extra)
        output = result.stdout + result.stderr
        if result.returncode != 2 or expected not in output or "Traceback" in output:
            failures.append(f"{label}: rc={result.returncode}\n{output[-1500:]}")
    assert not failures, "\n\n".join(failures)
