"""Retrieval metrics with ties broken pessimistically: a relevant document tied with irrelevant
ones ranks after all of them, so a collapsed model (every score equal) scores at chance or
below, never at 1.0."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def ranks_of_relevant(scores: np.ndarray, relevant: set[int]) -> list[int]:
    """1-based ranks of the relevant documents in one query's score row (pessimistic ties)."""
    is_relevant = np.zeros(scores.shape[0], dtype=np.int8)
    is_relevant[list(relevant)] = 1
    # lexsort: the last key is primary -> by descending score, irrelevant first among ties
    order = np.lexsort((is_relevant, -scores))
    positions = np.empty_like(order)
    positions[order] = np.arange(1, len(order) + 1)
    return sorted(int(positions[d]) for d in relevant)


def retrieval_metrics(
    scores: np.ndarray | torch.Tensor,
    relevant: Sequence[set[int]],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """recall@k, MRR@10 and nDCG@10 (binary gains), averaged over queries.

    `scores[q, d]` is the similarity of query q to document d; `relevant[q]` the set of its
    relevant documents (queries without any are skipped)."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().float().cpu().numpy()
    totals = {f"recall@{k}": 0.0 for k in ks} | {"mrr@10": 0.0, "ndcg@10": 0.0}
    counted = 0
    for row, rel in zip(scores, relevant, strict=True):
        if not rel:
            continue
        counted += 1
        ranks = ranks_of_relevant(np.asarray(row, dtype=np.float64), set(rel))
        for k in ks:
            totals[f"recall@{k}"] += sum(r <= k for r in ranks) / len(ranks)
        totals["mrr@10"] += 1.0 / ranks[0] if ranks[0] <= 10 else 0.0
        dcg = sum(1.0 / math.log2(r + 1) for r in ranks if r <= 10)
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(ranks), 10)))
        totals["ndcg@10"] += dcg / ideal
    if counted == 0:
        return {key: float("nan") for key in totals}
    return {key: value / counted for key, value in totals.items()}


def alignment_uniformity(queries: torch.Tensor, positives: torch.Tensor, documents: torch.Tensor,
                         max_rows: int = 2000) -> dict[str, float]:
    """Label-free embedding quality (Wang & Isola 2020), from embeddings alone: alignment is the
    mean squared distance between each query and its positive (lower is better), uniformity
    log E[exp(-2 |x - y|^2)] over distinct document pairs (lower: spread over the sphere). Both
    on L2-normalised rows; a collapsed model has alignment 0 and uniformity 0 (its worst)."""
    q = torch.nn.functional.normalize(queries.float(), dim=-1)
    p = torch.nn.functional.normalize(positives.float(), dim=-1)
    d = torch.nn.functional.normalize(documents[:max_rows].float(), dim=-1)
    alignment = float((q - p).pow(2).sum(-1).mean()) if len(q) else float("nan")
    if len(d) < 2:
        return {"alignment": alignment, "uniformity": float("nan")}
    distances = torch.pdist(d).pow(2)
    uniformity = float(torch.logsumexp(-2 * distances, 0) - math.log(len(distances)))
    return {"alignment": alignment, "uniformity": uniformity}


def evaluate_pairs(model, pairs, batch_size: int = 64, device=None) -> dict[str, float]:
    """Retrieve among every distinct document of `pairs` (positives and hard negatives) for each
    distinct query; its positives are the relevant documents (the pairs are the only labels
    needed). Also the label-free alignment and uniformity of the embeddings."""
    documents: dict[str, int] = {}
    for pair in pairs:
        for text in (pair.positive, *pair.negatives):
            documents.setdefault(text, len(documents))
    queries: dict[str, set[int]] = {}
    for pair in pairs:
        queries.setdefault(pair.query, set()).add(documents[pair.positive])
    # torch.as_tensor: a sentence-transformers model's encode returns numpy
    query_emb = torch.as_tensor(model.encode(list(queries), batch_size=batch_size, device=device))
    doc_emb = torch.as_tensor(model.encode(list(documents), batch_size=batch_size, device=device))
    scores = query_emb @ doc_emb.T
    result = retrieval_metrics(scores, list(queries.values()))
    query_index = {text: i for i, text in enumerate(queries)}
    result.update(alignment_uniformity(
        query_emb[[query_index[p.query] for p in pairs]], doc_emb[[documents[p.positive] for p in pairs]],
        doc_emb))
    result["queries"] = len(queries)
    result["documents"] = len(documents)
    return result
