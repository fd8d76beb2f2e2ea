"""Tiny real models (a 2-layer BERT with a word-level tokenizer built in memory, saved with
save_pretrained) and synthetic retrieval data in which queries share no words with their
documents."""

from __future__ import annotations

import json
import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

N_WORDS = 60  # document words d0..d59; query words q0..q59 through a fixed random bijection


def vocabulary() -> list[str]:
    return [f"d{i}" for i in range(N_WORDS)] + [f"q{i}" for i in range(N_WORDS)]


def save_tiny_bert(path, *, seed: int = 0, hidden: int = 64):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {token: i for i, token in enumerate(specials + vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]",
    )
    assert tokenizer("d1 q2")["input_ids"] == [2, vocab["d1"], vocab["q2"], 3]  # no collapsed vocab
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def synthetic_pairs(n: int, seed: int = 0, words: int = 4) -> list[dict[str, str]]:
    """Documents of random d-words; each query is its document's words mapped to q-words."""
    rng = random.Random(seed)
    mapping = list(range(N_WORDS))
    random.Random(1234).shuffle(mapping)
    rows = []
    for _ in range(n):
        doc = rng.sample(range(N_WORDS), words)
        rows.append({
            "query": " ".join(f"q{mapping[w]}" for w in doc),
            "positive": " ".join(f"d{w}" for w in doc),
        })
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def other_bert(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("other_bert"), seed=1, hidden=32)


@pytest.fixture(scope="session")
def make_pairs():
    """synthetic_pairs(n, seed=0): query/positive dicts whose queries share no word with their
    documents."""
    return synthetic_pairs


@pytest.fixture(scope="session")
def jsonl():
    """write_jsonl(path, rows) -> path."""
    return write_jsonl
