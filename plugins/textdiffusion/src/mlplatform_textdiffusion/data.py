"""Corpora (a text file, one sentence a line, or JSONL) and the tokenizer pair that turns
sentences into encoder/decoder batches and decoder ids back into text."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from mlplatform.api import ConfigError

log = logging.getLogger(__name__)

TOO_LONG = ("truncate", "refuse")


def load_corpus(path: str | Path, fmt: str = "auto", text_key: str = "text") -> list[str]:
    """Sentences from a text file (one per non-blank line) or JSONL (`text_key` of each object)."""
    path = Path(path)
    if fmt not in ("auto", "text", "jsonl"):
        raise ConfigError(f"unknown corpus format {fmt!r}", "pass auto, text or jsonl")
    if not path.is_file():
        raise ConfigError(f"corpus file {path} does not exist", "pass trainer.corpus=PATH to a text or JSONL file")
    if fmt == "auto":
        fmt = "jsonl" if path.suffix.lower() in (".jsonl", ".json") else "text"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read corpus {path}: {exc}", "pass a readable UTF-8 file") from exc
    sentences = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if fmt == "text":
            sentences.append(line.strip())
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{path}:{number} is not valid JSON ({exc})", "fix the line or use a text corpus") from exc
        if not isinstance(record, dict) or not isinstance(record.get(text_key), str):
            raise ConfigError(
                f"{path}:{number} has no string field {text_key!r}",
                "pass trainer.text_key=FIELD naming the text field of each JSON object",
            )
        if record[text_key].strip():
            sentences.append(record[text_key].strip())
    if not sentences:
        raise ConfigError(f"corpus {path} holds no sentences", "pass a corpus with at least one non-empty line")
    return sentences


class TextCodec:
    """The encoder's and the decoder's tokenizers, with the length policy."""

    def __init__(self, encoder_tokenizer, decoder_tokenizer, max_length: int, too_long: str = "truncate"):
        if too_long not in TOO_LONG:
            raise ConfigError(f"unknown too_long policy {too_long!r}", "pass truncate or refuse")
        if max_length < 1:
            raise ConfigError(f"max_length must be >= 1, got {max_length}", "pass e.g. max_length=64")
        self.enc = encoder_tokenizer
        self.dec = decoder_tokenizer
        self.max_length = max_length
        self.too_long = too_long
        self.eos_id = self.dec.eos_token_id
        if self.eos_id is None:
            raise ConfigError("the decoder's tokenizer has no eos token", "use a tokenizer with an eos_token")
        self.bos_id = self.dec.bos_token_id if self.dec.bos_token_id is not None else self.eos_id
        self.dec_pad_id = self.dec.pad_token_id if self.dec.pad_token_id is not None else self.eos_id
        self.enc_pad_id = self.enc.pad_token_id if self.enc.pad_token_id is not None else 0

    def _words(self, tokenizer, sentence: str, special: bool) -> list[int]:
        return tokenizer(sentence, add_special_tokens=special)["input_ids"]

    def check_lengths(self, sentences: list[str]) -> None:
        """Apply the too_long policy: refuse names the first sentence over the limit; truncate
        logs one warning with the count."""
        over = [i for i, s in enumerate(sentences) if len(self._words(self.dec, s, False)) > self.max_length]
        if not over:
            return
        first = sentences[over[0]]
        if self.too_long == "refuse":
            raise ConfigError(
                f"{len(over)} sentence(s) exceed max_length={self.max_length} tokens, the first "
                f"(#{over[0]}): {first[:80]!r}",
                "shorten them, raise max_length (up to the models' maximum), or pass too_long=truncate",
            )
        log.warning("%d sentence(s) longer than max_length=%d tokens are truncated", len(over), self.max_length)

    def encoder_batch(self, sentences: list[str], device=None):
        rows = [self._words(self.enc, s, True)[: self.max_length + 2] for s in sentences]
        return _pad(rows, self.enc_pad_id, device)

    def decoder_batch(self, sentences: list[str], device=None):
        rows = [[self.bos_id, *self._words(self.dec, s, False)[: self.max_length], self.eos_id] for s in sentences]
        return _pad(rows, self.dec_pad_id, device)

    def decode(self, ids: list[int]) -> str:
        return self.dec.decode(ids, skip_special_tokens=True).strip()


def _pad(rows: list[list[int]], pad_id: int, device):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)
