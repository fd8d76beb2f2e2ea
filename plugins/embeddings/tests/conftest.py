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


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread for these tiny models, in this plugin's test modules only (other plugins'
    tests keep their thread count): on 2 cores, two threads spend their time in OpenMP barriers
    (a tiny CLIP's 36 training steps: 6 s with 2 threads, 2 s with 1 on the shared sandbox).
    The tests' subprocesses (CLI, torchrun) get OMP_NUM_THREADS=1."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def vocabulary() -> list[str]:
    return [f"d{i}" for i in range(N_WORDS)] + [f"q{i}" for i in range(N_WORDS)]


def save_tiny_bert(path, *, seed: int = 0, hidden: int = 64, words: list[str] | None = None):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {token: i for i, token in enumerate(specials + (words or vocabulary()))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]",
    )
    first, last = list(vocab)[4], list(vocab)[-1]  # no collapsed vocabulary
    assert tokenizer(f"{first} {last}")["input_ids"] == [2, vocab[first], vocab[last], 3]
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


DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def save_tiny_clip(path, *, seed: int = 0):
    """A 2-layer CLIP (hidden 32; 8x8 images in 4x4 patches) with a word-level tokenizer
    for captions like "a photo of the digit seven", saved with save_pretrained."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "<s>", "</s>"]
    words = ["a", "photo", "of", "the", "digit", *DIGIT_WORDS]
    vocab = {token: i for i, token in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                        bos_token="<s>", eos_token="</s>")
    assert tokenizer("the digit two")["input_ids"] == [2, vocab["the"], vocab["digit"], vocab["two"], 3]
    torch.manual_seed(seed)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**small, "vocab_size": len(vocab), "max_position_embeddings": 16,
                     "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3},
        vision_config={**small, "image_size": 8, "patch_size": 4, "num_channels": 3},
        projection_dim=32,
    )
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8}).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def save_tiny_vit(path, *, seed: int = 0):
    """A 2-layer ViT (hidden 32) for 8x8 RGB images in 4x4 patches, with its image processor."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=8, patch_size=4, num_channels=3)
    ViTModel(config, add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def caption_towers(tmp_path_factory):
    """(text tower, image tower) directories: a tiny BERT knowing the digit captions, a tiny ViT."""
    words = ["a", "photo", "of", "the", "digit", *DIGIT_WORDS]
    return (save_tiny_bert(tmp_path_factory.mktemp("caption_bert"), hidden=32, words=words),
            save_tiny_vit(tmp_path_factory.mktemp("tiny_vit")))


def save_tiny_open_clip(path, *, seed: int = 0):
    """A 2-layer open_clip CLIP (width 32, 8x8 images in 4x4 patches, context 12) in open_clip's
    local-dir format: open_clip_config.json + open_clip_model.safetensors."""
    import torch
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    model_cfg = {"embed_dim": 32,
                 "vision_cfg": {"image_size": 8, "layers": 2, "width": 32, "head_width": 16, "patch_size": 4},
                 "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    torch.manual_seed(seed)
    model = CLIP(**model_cfg)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "open_clip_model.safetensors"))
    (path / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    }))
    return path


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory):
    pytest.importorskip("open_clip")
    return save_tiny_open_clip(tmp_path_factory.mktemp("tiny_open_clip"))
