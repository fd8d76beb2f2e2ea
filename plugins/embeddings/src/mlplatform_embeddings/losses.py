"""Contrastive losses, called the way the trainer calls them:

    loss = loss_fn(query_emb, positive_emb, negative_emb, query_ids=..., doc_ids=..., negative_ids=...)

Embeddings are L2-normalised rows; `negative_emb` (rows x K hard negatives, flattened) joins the
in-batch pool. The ids say which rows hold the same text, so a duplicate positive (or a hard
negative that equals another row's positive) is masked instead of being pushed away."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from mlplatform.api import ConfigError

MAX_SCALE = 100.0  # CLIP's cap on the learnable logit scale (temperature >= 0.01)


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE (MultipleNegativesRanking, CLIP) with a fixed or learnable temperature.

    A learnable temperature is the parameter `log_scale` (log of 1/temperature): hand
    `loss.parameters()` to the optimizer with the model's (the trainer does)."""

    def __init__(
        self,
        temperature: float = 0.05,
        *,
        learnable_temperature: bool = False,
        mask_duplicates: bool = True,
        symmetric: bool = True,
    ):
        super().__init__()
        if not 0.0 < temperature:
            raise ConfigError(
                f"loss.temperature is {temperature}; it must be above 0", "pass e.g. loss.temperature=0.05"
            )
        start = torch.tensor(math.log(1.0 / temperature))
        if learnable_temperature:
            self.log_scale = nn.Parameter(start)
        else:
            self.register_buffer("log_scale", start)
        self.mask_duplicates = mask_duplicates
        self.symmetric = symmetric

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=MAX_SCALE)

    @property
    def temperature(self) -> float:
        return float(1.0 / self.scale.detach())

    def forward(
        self,
        query: torch.Tensor,
        positive: torch.Tensor,
        negatives: torch.Tensor | None = None,
        *,
        query_ids: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
        negative_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        rows = query.shape[0]
        candidates = positive if negatives is None or negatives.numel() == 0 else torch.cat([positive, negatives])
        scale = self.scale
        logits = scale * query.float() @ candidates.float().T
        target = torch.arange(rows, device=query.device)
        same = None
        if self.mask_duplicates and doc_ids is not None:
            candidate_ids = doc_ids if candidates is positive else torch.cat([doc_ids, negative_ids])
            same = doc_ids[:, None] == candidate_ids[None, :]
            if query_ids is not None:  # a repeated query: the other row's positive is right too
                same[:, :rows] |= query_ids[:, None] == query_ids[None, :]
            same[target, target] = False
            logits = logits.masked_fill(same, float("-inf"))
        loss = nn.functional.cross_entropy(logits, target)
        if not self.symmetric:
            return loss
        back = scale * positive.float() @ query.float().T
        if same is not None:
            back = back.masked_fill(same[:, :rows].T, float("-inf"))
        return (loss + nn.functional.cross_entropy(back, target)) / 2


class MatryoshkaLoss(nn.Module):
    """The base loss averaged over the full embedding and its leading `dims` (each prefix
    re-normalised), so truncated embeddings stay useful for retrieval."""

    def __init__(self, base: nn.Module, dims: list[int]):
        super().__init__()
        if not dims or any(d < 1 for d in dims) or len(set(dims)) != len(dims):
            raise ConfigError(
                f"loss.matryoshka_dims is {dims}; it must list distinct sizes of at least 1",
                "pass e.g. trainer.loss.matryoshka_dims=[32,64]",
            )
        self.base = base
        self.dims = sorted(dims)

    @property
    def temperature(self) -> float | None:
        return getattr(self.base, "temperature", None)

    def forward(self, query, positive, negatives=None, **ids) -> torch.Tensor:
        full = query.shape[-1]
        if self.dims[-1] >= full:
            raise ConfigError(
                f"loss.matryoshka_dims {self.dims} must all be below the embedding size {full}",
                "drop the sizes that are not smaller than the embedding",
            )

        def cut(x, d):
            return None if x is None else nn.functional.normalize(x[..., :d].float(), dim=-1)

        losses = [self.base(query, positive, negatives, **ids)]
        losses += [self.base(cut(query, d), cut(positive, d), cut(negatives, d), **ids) for d in self.dims]
        return torch.stack(losses).mean()


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, kind: str = "kl", temperature: float = 0.05
) -> torch.Tensor:
    """How far the student's query-document similarities are from the teacher's (both
    (rows, candidates) matrices of cosine similarities): `kl` is KL(teacher || student) of the
    row-wise softmax at `temperature`, scaled by temperature^2; `mse` the mean squared error."""
    if kind == "mse":
        return nn.functional.mse_loss(student.float(), teacher.float())
    if kind != "kl":
        raise ConfigError(f"unknown loss.distillation_loss {kind!r}", "use kl or mse")
    log_student = torch.log_softmax(student.float() / temperature, dim=-1)
    log_teacher = torch.log_softmax(teacher.float() / temperature, dim=-1)
    kl = nn.functional.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


def build_loss(name: str = "infonce", *, matryoshka_dims: list[int] | None = None,
               **options: Any) -> nn.Module:
    """The registered loss `name` (kind embedding_loss) made from LossConfig fields `options`
    (temperature=..., options={...} for a plugin's loss), wrapped in Matryoshka when dims are
    given. An unknown name is an UnknownNameError naming the closest registered loss."""
    from mlplatform.api import from_options

    from .families import loss_factory
    from .schemas import LossConfig

    cfg = from_options(LossConfig, {**options, "name": name}, "trainer.loss")
    loss = loss_factory(cfg.name)(cfg)
    if not isinstance(loss, nn.Module):
        raise ConfigError(f"the loss factory {name!r} returned a {type(loss).__name__}, not a "
                          "torch.nn.Module", "return the loss module from the factory")
    return MatryoshkaLoss(loss, list(matryoshka_dims)) if matryoshka_dims else loss


def loss_temperature(loss: nn.Module) -> float | None:
    """The loss's current temperature, if it has one (logged, written into CLIP exports)."""
    value = getattr(loss, "temperature", None)
    return float(value) if value is not None else None
