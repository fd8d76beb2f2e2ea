"""Evaluation of a trained text-diffusion model (issue item 5): reconstruction BLEU, self-BLEU,
distinct-n, novelty against the training corpus and (optionally) perplexity under a judge
language model from a local path, each as mean and std over `n_sets` sample sets.

The metric functions take plain lists of sentences, so they can be checked by hand."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError

METRICS = ("reconstruction_bleu", "self_bleu", "distinct_1", "distinct_2", "novelty", "perplexity")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0-100) of hypotheses against one reference each."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def self_bleu(sentences: Sequence[str]) -> float:
    """Mean sacrebleu sentence BLEU of each sentence against all the others (0-100; higher is
    less diverse). Needs at least two sentences."""
    import sacrebleu

    sentences = list(sentences)
    if len(sentences) < 2:
        raise ConfigError("self-BLEU needs at least 2 sentences", "pass job.num_samples=2 or more")
    scores = [
        sacrebleu.sentence_bleu(s, sentences[:i] + sentences[i + 1:]).score for i, s in enumerate(sentences)
    ]
    return float(sum(scores) / len(scores))


def distinct_n(sentences: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the sentences (whitespace tokens; 0 when none)."""
    grams = []
    for sentence in sentences:
        words = sentence.split()
        grams += [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def novelty(samples: Sequence[str], training: Sequence[str] | set[str]) -> float:
    """Fraction of samples (whitespace-normalized) that are not a sentence of the training corpus."""
    if not samples:
        return 0.0
    seen = {" ".join(s.split()) for s in training}
    return sum(" ".join(s.split()) not in seen for s in samples) / len(samples)


class JudgeLM:
    """A causal language model from a local directory (no download) scoring sentences."""

    def __init__(self, path: str | Path, device: Any = "cpu"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"judge LM {path} is not a local directory",
                              "pass job.judge_lm=DIR saved with save_pretrained (model and tokenizer)")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).to(device).eval()
        self.device = device

    def perplexity(self, sentences: Sequence[str]) -> float:
        """exp of the mean token negative log-likelihood over all sentences (eos appended, bos
        prepended when the tokenizer has them)."""
        import math

        import torch

        tok = self.tokenizer
        total, count = 0.0, 0
        for sentence in sentences:
            ids = tok(sentence, add_special_tokens=False)["input_ids"]
            bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            ids = ([bos] if bos is not None else []) + ids + ([tok.eos_token_id] if tok.eos_token_id is not None else [])
            if len(ids) < 2:
                continue
            x = torch.tensor([ids], device=self.device)
            with torch.no_grad():
                logits = self.model(x).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum")
            total += float(nll)
            count += len(ids) - 1
        return math.exp(total / count) if count else float("nan")


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "std" (sample std; 0 for one value), "values"}."""
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def evaluate(pipe, corpus: Sequence[str], *, n_sets: int = 3, num_samples: int = 32, sampler: str = "ddim",
             steps: int | None = 50, eta: float = 0.0, decoding=None, seed: int = 0,
             judge_lm: str | Path | None = None,
             extra_metrics: dict[str, Callable[[list[str]], float]] | None = None) -> dict[str, Any]:
    """Metrics of `pipe` (a TextDiffusionPipeline) over `n_sets` sample sets of `num_samples`
    sentences each (set i uses seed + i). Reconstruction BLEU uses, per set, `num_samples`
    corpus sentences drawn with that seed. `extra_metrics` maps names to functions of a set's
    samples (e.g. a grammar check), reported like the others. Returns {"metrics": {name:
    mean_std}, ...}."""
    corpus = list(corpus)
    if n_sets < 1:
        raise ConfigError(f"n_sets must be >= 1, got {n_sets}", "pass job.n_sets=3")
    if num_samples < 2:
        raise ConfigError(f"evaluation needs num_samples >= 2, got {num_samples}", "pass job.num_samples=32")
    if not corpus:
        raise ConfigError("evaluation needs the training corpus", "pass job.corpus=PATH")
    judge = JudgeLM(judge_lm, pipe.device) if judge_lm else None
    extra_metrics = dict(extra_metrics or {})
    per_set: dict[str, list[float]] = {m: [] for m in METRICS if judge or m != "perplexity"}
    per_set.update({name: [] for name in extra_metrics})
    examples = []
    for i in range(n_sets):
        texts, _ = pipe.sample(num_samples, sampler=sampler, steps=steps, eta=eta, decoding=decoding, seed=seed + i)
        refs = random.Random(seed + i).sample(corpus, min(num_samples, len(corpus)))
        recon, _ = pipe.reconstruct(refs, decoding=decoding, seed=seed + i)
        per_set["reconstruction_bleu"].append(corpus_bleu(recon, refs))
        per_set["self_bleu"].append(self_bleu(texts))
        per_set["distinct_1"].append(distinct_n(texts, 1))
        per_set["distinct_2"].append(distinct_n(texts, 2))
        per_set["novelty"].append(novelty(texts, corpus))
        if judge:
            per_set["perplexity"].append(judge.perplexity(texts))
        for name, metric in extra_metrics.items():
            per_set[name].append(float(metric(texts)))
        examples.append(texts[:5])
    result = {
        "metrics": {name: mean_std(values) for name, values in per_set.items()},
        "n_sets": n_sets, "num_samples": num_samples, "sampler": sampler,
        "steps": None if sampler == "ddpm" else steps, "eta": eta, "seed": seed,
        "judge_lm": str(judge_lm) if judge_lm else None, "examples": examples,
    }
    if not judge:
        result["notes"] = ["perplexity skipped: no judge LM given (pass job.judge_lm=DIR, a local causal LM)"]
    return result
