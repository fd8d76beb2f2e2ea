"""Evaluation metrics against hand-computed cases, and mode=evaluate end to end through the CLI."""

from __future__ import annotations

import json
import math

import pytest
from mlplatform_textdiffusion.evaluate import (
    JudgeLM,
    corpus_bleu,
    distinct_n,
    mean_std,
    novelty,
    self_bleu,
)

from mlplatform.testing import run_cli


def test_distinct_n_by_hand():
    sentences = ["a b a", "a b"]
    assert distinct_n(sentences, 1) == pytest.approx(2 / 5)  # a b a a b -> {a, b}
    assert distinct_n(sentences, 2) == pytest.approx(2 / 3)  # (a b) (b a) (a b)
    assert distinct_n(["x"], 2) == 0.0  # no bigrams at all
    assert distinct_n(["the cat sees a dog"], 1) == 1.0


def test_novelty_by_hand():
    training = ["the cat sees", "a dog likes the man"]
    assert novelty(["the cat sees", "a dog"], training) == 0.5
    assert novelty(["the  cat sees "], training) == 0.0  # whitespace-normalized
    assert novelty(["a big bird", "the red cat"], training) == 1.0


def test_self_bleu_and_corpus_bleu_by_hand():
    same = ["the big cat sees a dog"] * 3
    assert self_bleu(same) == pytest.approx(100.0)
    assert self_bleu(["the big cat sees a dog", "one two three four five six"]) == pytest.approx(0.0)
    assert corpus_bleu(["the big cat sees a dog"], ["the big cat sees a dog"]) == pytest.approx(100.0)
    assert corpus_bleu(["one two three four"], ["the big cat sees"]) == pytest.approx(0.0)
    with pytest.raises(Exception, match="at least 2"):
        self_bleu(["alone"])


def test_mean_std_by_hand():
    stats = mean_std([1.0, 3.0])
    assert stats["mean"] == 2.0 and stats["std"] == pytest.approx(math.sqrt(2)) and stats["values"] == [1.0, 3.0]
    assert mean_std([5.0])["std"] == 0.0


def test_judge_perplexity_equals_the_models_own_loss(tiny_models):
    import torch

    gpt2 = tiny_models[1]
    judge = JudgeLM(gpt2)
    ids = [4, *judge.tokenizer("the cat sees", add_special_tokens=False)["input_ids"], 5]
    with torch.no_grad():
        loss = judge.model(torch.tensor([ids]), labels=torch.tensor([ids])).loss
    assert judge.perplexity(["the cat sees"]) == pytest.approx(math.exp(float(loss)), rel=1e-5)
    with pytest.raises(Exception, match="not a local directory"):
        JudgeLM(gpt2 / "missing")


@pytest.fixture(scope="module")
def tiny_trained(tiny_models, grammar_corpus, tmp_path_factory):
    from mlplatform_textdiffusion.train import train

    bert, gpt2 = tiny_models
    options = {
        "name": "text_diffusion", "corpus": str(grammar_corpus), "steps": 30, "batch_size": 16, "lr": 3e-3,
        "log_every": 30, "progress": False,
        "vae": {"encoder": {"connector": "BertForLatentConnector", "source": str(bert)},
                "decoder": {"connector": "GPT2ForLatentConnector", "source": str(gpt2)},
                "latent_size": 8, "max_length": 16},
        "diffusion": {"n_T": 50, "hidden_dim": 16, "num_layers": 2},
    }
    return train(options, tmp_path_factory.mktemp("evaltrain"), device="cpu", seed=0).model_dir


def test_evaluate_mode_through_the_cli(tiny_trained, tiny_models, grammar_corpus, tmp_path):
    env = {"MLPLATFORM_LOAD_PLUGINS": "textdiffusion"}
    result = run_cli("job=sample", "job.mode=evaluate", f"job.model={tiny_trained}", f"job.corpus={grammar_corpus}",
                     "job.num_samples=6", "job.n_sets=2", "job.steps=10", "job.max_new_tokens=12",
                     f"job.judge_lm={tiny_models[1]}", "hydra.run.dir=ev", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "ev" / "eval_metrics.json").read_text())
    metrics = record["metrics"]
    assert set(metrics) == {"reconstruction_bleu", "self_bleu", "distinct_1", "distinct_2", "novelty", "perplexity"}
    for stats in metrics.values():
        assert len(stats["values"]) == 2 and stats["std"] >= 0
    assert 0 <= metrics["novelty"]["mean"] <= 1 and metrics["perplexity"]["mean"] > 1
    assert "perplexity:" in result.stdout

    missing = run_cli("job=sample", "job.mode=evaluate", f"job.model={tiny_trained}", "hydra.run.dir=ev2",
                      cwd=tmp_path, env=env)
    assert missing.returncode == 2 and "needs the training corpus" in missing.stderr
