"""InfoNCE against a hand computation, duplicate masking, hard negatives, the learnable
temperature; retrieval metrics against hand-computed cases with pessimistic ties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mlplatform_embeddings import InfoNCELoss, MatryoshkaLoss, Pair, build_model, retrieval_metrics
from mlplatform_embeddings.metrics import evaluate_pairs
from mlplatform_embeddings.optim import build_optimizer, lr_factor
from mlplatform_embeddings.schemas import OptimConfig


def _unit(rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_infonce_matches_hand_computation():
    q, p = _unit([[1, 0], [0, 1]]), _unit([[1, 1], [0, 1]])
    loss = InfoNCELoss(temperature=0.5, symmetric=False)
    logits = (q @ p.T) / 0.5
    expected = -(torch.log_softmax(logits, 1)[0, 0] + torch.log_softmax(logits, 1)[1, 1]) / 2
    assert torch.allclose(loss(q, p), expected)
    symmetric = InfoNCELoss(temperature=0.5)
    back = -(torch.log_softmax(logits.T, 1)[0, 0] + torch.log_softmax(logits.T, 1)[1, 1]) / 2
    assert torch.allclose(symmetric(q, p), (expected + back) / 2)


def test_hard_negatives_join_the_pool():
    q, p, n = _unit([[1, 0], [0, 1]]), _unit([[1, 0.2], [0.2, 1]]), _unit([[1, 0.1], [0.1, 1]])
    loss = InfoNCELoss(temperature=0.1, symmetric=False)
    ids = torch.tensor([0, 1])
    with_negatives = loss(q, p, n, query_ids=ids, doc_ids=ids, negative_ids=torch.tensor([2, 3]))
    logits = torch.cat([q @ p.T, q @ n.T], 1) / 0.1
    assert torch.allclose(with_negatives, torch.nn.functional.cross_entropy(logits, ids))
    assert with_negatives > loss(q, p)


def test_duplicate_positives_are_masked():
    q = _unit([[1, 0], [0, 1], [1, 1]])
    p = _unit([[1, 0.1], [0.1, 1], [1, 0.1]])  # rows 0 and 2 have the same positive text
    doc_ids, query_ids = torch.tensor([0, 1, 0]), torch.tensor([0, 1, 2])
    loss = InfoNCELoss(temperature=0.1, symmetric=False)
    masked = loss(q, p, query_ids=query_ids, doc_ids=doc_ids)
    logits = (q @ p.T) / 0.1
    logits[0, 2] = logits[2, 0] = float("-inf")
    assert torch.allclose(masked, torch.nn.functional.cross_entropy(logits, torch.arange(3)))
    unmasked = InfoNCELoss(temperature=0.1, symmetric=False, mask_duplicates=False)
    assert unmasked(q, p, query_ids=query_ids, doc_ids=doc_ids) > masked


def test_learnable_temperature_is_a_parameter_the_optimizer_updates():
    loss = InfoNCELoss(temperature=0.05, learnable_temperature=True)
    assert [name for name, _ in loss.named_parameters()] == ["log_scale"]
    assert loss.temperature == pytest.approx(0.05)
    optimizer = build_optimizer([loss], OptimConfig(learning_rate=0.1))
    assert any(loss.log_scale is p for g in optimizer.param_groups for p in g["params"])
    q, p = _unit([[1, 0], [0, 1]]), _unit([[1, 0.5], [0.5, 1]])
    loss(q, p).backward()
    optimizer.step()
    assert loss.temperature != pytest.approx(0.05)
    fixed = InfoNCELoss(temperature=0.05)
    assert list(fixed.parameters()) == []


def test_no_weight_decay_on_bias_and_norm():
    layer = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
    optimizer = build_optimizer([layer], OptimConfig(weight_decay=0.1))
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] for p in g["params"]}
    assert decayed == {id(layer[0].weight)}


def test_schedules_with_warmup():
    assert [lr_factor(s, "constant", 2, 10) for s in range(3)] == [1 / 3, 2 / 3, 1.0]
    assert lr_factor(2, "linear", 2, 10) == 1.0 and lr_factor(10, "linear", 2, 10) == 0.0
    assert lr_factor(6, "cosine", 2, 10) == pytest.approx(0.5)


def test_metrics_against_hand_computed_cases():
    scores = np.array([
        [0.9, 0.8, 0.1],  # relevant doc 1 at rank 2
        [0.1, 0.2, 0.3],  # relevant docs 0 (rank 3) and 2 (rank 1)
    ])
    result = retrieval_metrics(scores, [{1}, {0, 2}], ks=(1, 2))
    assert result["recall@1"] == pytest.approx((0 + 0.5) / 2)
    assert result["recall@2"] == pytest.approx((1 + 0.5) / 2)
    assert result["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)
    ndcg_0 = (1 / math.log2(3)) / 1.0
    ndcg_1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert result["ndcg@10"] == pytest.approx((ndcg_0 + ndcg_1) / 2)


def test_ties_are_broken_pessimistically_and_a_collapsed_model_is_at_chance():
    tied = np.zeros((1, 4))
    result = retrieval_metrics(tied, [{0}], ks=(1, 4))
    assert result["recall@1"] == 0.0 and result["recall@4"] == 1.0
    assert result["mrr@10"] == pytest.approx(1 / 4)
    # 50 queries, 50 documents, every score equal: nothing above chance
    collapsed = retrieval_metrics(np.ones((50, 50)), [{i} for i in range(50)], ks=(1, 10))
    assert collapsed["recall@1"] == 0.0 and collapsed["recall@10"] == 0.0 and collapsed["ndcg@10"] == 0.0


def test_matryoshka_averages_the_loss_over_truncated_embeddings():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    base = InfoNCELoss(temperature=0.1)
    loss = MatryoshkaLoss(base, [4, 2])

    def cut(x, d):
        return torch.nn.functional.normalize(x[:, :d], dim=-1)

    expected = (base(q, p) + base(cut(q, 2), cut(p, 2)) + base(cut(q, 4), cut(p, 4))) / 3
    assert torch.allclose(loss(q, p), expected)


def test_a_collapsed_model_scores_no_better_than_chance(tiny_bert):
    model = build_model({"model_name": str(tiny_bert)})
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()  # every text gets the same (zero) embedding
    pairs = [Pair(f"q{i} q{i + 1}", f"d{i} d{i + 1}") for i in range(30)]
    result = evaluate_pairs(model, pairs)
    assert result["queries"] == 30 and result["recall@1"] == 0.0 and result["ndcg@10"] == 0.0


def test_distillation_losses_match_hand_computation():
    from mlplatform_embeddings.losses import distillation_loss

    student = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.3]])
    teacher = torch.tensor([[0.7, 0.3, 0.1], [0.1, 0.9, 0.2]])
    t = 0.5
    p_teacher = torch.softmax(teacher / t, -1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / t, -1))).sum(-1).mean() * t**2
    assert torch.allclose(distillation_loss(student, teacher, "kl", t), kl)
    assert torch.allclose(distillation_loss(student, teacher, "mse"), ((student - teacher) ** 2).mean())
    assert distillation_loss(teacher, teacher, "kl", t).abs() < 1e-6


def test_label_free_alignment_and_uniformity_hand_computed():
    from mlplatform_embeddings.metrics import alignment_uniformity

    e = torch.eye(3)
    perfect = alignment_uniformity(e, e, e)
    assert perfect["alignment"] == 0.0
    # every distinct pair of orthonormal rows is at squared distance 2: log(exp(-4)) = -4
    assert perfect["uniformity"] == pytest.approx(-4.0)
    collapsed = alignment_uniformity(torch.ones(3, 3), torch.ones(3, 3), torch.ones(4, 3))
    assert collapsed["uniformity"] == pytest.approx(0.0, abs=1e-6)  # the worst value
    swapped = alignment_uniformity(e, e[[1, 2, 0]], e)
    assert swapped["alignment"] == pytest.approx(2.0)  # every query at distance^2 2 from its positive
