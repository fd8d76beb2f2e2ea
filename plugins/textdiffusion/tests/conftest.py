"""Shared fixtures: a synthetic grammar corpus (so grammaticality is checkable exactly) and tiny
random BERT/GPT-2 models with a word-level tokenizer, saved with save_pretrained (offline).
Helpers live in mlplatform_textdiffusion.testing (tests import them from there, which works in
pytest's importlib mode too)."""

from __future__ import annotations

import os

import pytest
from mlplatform_textdiffusion.testing import write_grammar_corpus, write_tiny_models

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """(bert_dir, gpt2_dir): tiny random models plus the word-level tokenizer."""
    return write_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def grammar_corpus(tmp_path_factory):
    return write_grammar_corpus(tmp_path_factory.mktemp("corpus") / "grammar.txt")
