"""Length-bucketed sub-batches: a batch's texts (queries, positives and hard negatives together)
are tokenised once without padding, sorted by length and cut into chunks, each padded only to
its own longest text. A transformer encodes every row independently of the others, so the
embeddings equal those of one padded batch; what changes is that padding tokens (a third of the
tokens of a typical batch of mixed short queries and long documents) are not computed.

The cut points minimise `sum(rows x longest) + chunks x overhead` (dynamic programming over the
sorted lengths): `overhead` is what one more forward call costs in tokens, small on a CPU, large
on a GPU where padding is cheap and launches are not. GradCache uses the same chunks, capped at
its chunk size, as the pieces it encodes one at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

OVERHEAD_TOKENS = {"cpu": 64}  # other devices: GPU_OVERHEAD_TOKENS
GPU_OVERHEAD_TOKENS = 4096
MAX_CHUNK_ROWS = 128


def overhead_tokens(device_type: str) -> int:
    return OVERHEAD_TOKENS.get(device_type, GPU_OVERHEAD_TOKENS)


def partition(lengths: list[int], overhead: int, max_rows: int) -> list[tuple[int, int]]:
    """[start, end) ranges over `lengths` (sorted ascending) minimising padded tokens plus
    `overhead` per range, each at most `max_rows` long."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        width = lengths[end - 1]
        for start in range(max(0, end - max_rows), end):
            cost = best[start] + (end - start) * width + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    ranges, end = [], n
    while end > 0:
        ranges.append((cut[end], end))
        end = cut[end]
    return ranges[::-1]


@dataclass
class Chunks:
    """Padded pieces of a list of texts; `restore` puts the concatenated chunk outputs back into
    the texts' order (`torch.cat(outputs)[restore]`)."""

    inputs: list[dict[str, torch.Tensor]]
    restore: torch.Tensor

    def to(self, device: Any, **kwargs: Any) -> Chunks:
        return Chunks([{k: v.to(device, **kwargs) for k, v in c.items()} for c in self.inputs],
                      self.restore.to(device, **kwargs))

    @property
    def order(self) -> torch.Tensor:
        """Which text each concatenated output row belongs to (the inverse of `restore`)."""
        order = torch.empty_like(self.restore)
        order[self.restore] = torch.arange(len(self.restore), device=self.restore.device)
        return order

    @property
    def tokens(self) -> int:
        """Token positions computed (padding included)."""
        return sum(int(c["input_ids"].numel()) for c in self.inputs)


def _pad(encoded: dict[str, list], rows: list[int], tokenizer: Any) -> dict[str, torch.Tensor]:
    width = max(len(encoded["input_ids"][i]) for i in rows)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    fills = {"input_ids": tokenizer.pad_token_id,
             "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0) or 0}
    out = {}
    for key, values in encoded.items():
        tensor = torch.full((len(rows), width), fills.get(key, 0), dtype=torch.long)
        for row, index in enumerate(rows):
            value = torch.tensor(values[index], dtype=torch.long)
            if left:
                tensor[row, width - len(value):] = value
            else:
                tensor[row, : len(value)] = value
        out[key] = tensor
    return out


def tokenize_chunks(
    tokenizer: Any, texts: list[str], max_length: int, *, overhead: int = 64,
    max_rows: int = MAX_CHUNK_ROWS, bucketing: bool = True, groups: tuple[int, ...] = (),
) -> Chunks:
    """`texts` tokenised once, sorted by length and padded per chunk. Without `bucketing`,
    chunks of up to `max_rows` in the texts' own order, never across the boundaries `groups`
    (e.g. queries | documents: each side padded to its own longest, the usual way)."""
    keys = ["input_ids", "attention_mask"]
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    if "token_type_ids" in encoded:
        keys.append("token_type_ids")
    encoded = {key: encoded[key] for key in keys}
    lengths = [len(ids) for ids in encoded["input_ids"]]
    if bucketing:
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        ranges = partition([lengths[i] for i in order], overhead, max_rows)
    else:
        order = list(range(len(texts)))
        bounds = [0, *sorted(g for g in groups if 0 < g < len(texts)), len(texts)]
        ranges = [(s, min(s + max_rows, hi)) for lo, hi in zip(bounds, bounds[1:], strict=False)
                  for s in range(lo, hi, max_rows)]
    inputs = [_pad(encoded, order[start:end], tokenizer) for start, end in ranges]
    restore = torch.empty(len(texts), dtype=torch.long)
    restore[torch.tensor(order, dtype=torch.long)] = torch.arange(len(texts))
    return Chunks(inputs, restore)
