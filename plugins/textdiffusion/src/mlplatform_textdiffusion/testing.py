"""Tiny offline fixtures for tests, docs and quick experiments: a synthetic grammar whose
sentences can be checked exactly, a word-level tokenizer for it, and tiny random BERT / GPT-2
models saved with save_pretrained (no hub access)."""

from __future__ import annotations

import random
import re
from pathlib import Path

DET = ["the", "a"]
ADJ = ["big", "small", "red"]
NOUN = ["cat", "dog", "bird", "man", "woman"]
VERB = ["sees", "likes", "chases", "finds"]
WORDS = DET + ADJ + NOUN + VERB
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[BOS]", "[EOS]"]
VOCAB = len(SPECIALS) + len(WORDS)

_NP = rf"(?:{'|'.join(DET)}) (?:(?:{'|'.join(ADJ)}) )?(?:{'|'.join(NOUN)})"
GRAMMATICAL = re.compile(rf"^{_NP} (?:{'|'.join(VERB)})(?: {_NP})?$")


def grammar_sentence(rng: random.Random) -> str:
    """S -> NP V [NP]; NP -> Det [Adj] N."""

    def np() -> list[str]:
        words = [rng.choice(DET)]
        if rng.random() < 0.4:
            words.append(rng.choice(ADJ))
        return words + [rng.choice(NOUN)]

    words = np() + [rng.choice(VERB)]
    if rng.random() < 0.7:
        words += np()
    return " ".join(words)


def is_grammatical(sentence: str) -> bool:
    return bool(GRAMMATICAL.match(sentence))


def write_grammar_corpus(path: str | Path, n: int = 400, seed: int = 0) -> Path:
    rng = random.Random(seed)
    path = Path(path)
    path.write_text("\n".join(grammar_sentence(rng) for _ in range(n)) + "\n")
    return path


def make_tokenizer():
    """A word-level tokenizer over the grammar's words; the encoder gets [CLS] ... [SEP]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", bos_token="[BOS]", eos_token="[EOS]",
    )


def tiny_bert_config():
    from transformers import BertConfig

    # no dropout: tiny models on the toy grammar learn faster (and tests stay deterministic) without it
    return BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=40, pad_token_id=0,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_gpt2_config():
    from transformers import GPT2Config

    return GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=40,
                      bos_token_id=4, eos_token_id=5, pad_token_id=0,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def write_tiny_models(root: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Save a tiny random BERT and GPT-2 (each with the tokenizer) under root/bert, root/gpt2."""
    import torch
    from transformers import BertModel, GPT2LMHeadModel

    root = Path(root)
    torch.manual_seed(seed)
    tokenizer = make_tokenizer()
    bert, gpt2 = root / "bert", root / "gpt2"
    BertModel(tiny_bert_config()).save_pretrained(bert)
    GPT2LMHeadModel(tiny_gpt2_config()).save_pretrained(gpt2)
    tokenizer.save_pretrained(bert)
    tokenizer.save_pretrained(gpt2)
    return bert, gpt2
