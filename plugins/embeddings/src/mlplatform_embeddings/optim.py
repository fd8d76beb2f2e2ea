"""AdamW with no weight decay on biases and normalisation weights, and a warmup schedule
(cosine, linear or constant) counted in optimizer steps."""

from __future__ import annotations

import math

import torch
from torch import nn

from mlplatform.api import ConfigError

from .schemas import SCHEDULERS, OptimConfig


def parameter_groups(modules: list[nn.Module], weight_decay: float) -> list[dict]:
    """Trainable parameters split into decayed (matrices) and undecayed (biases, norms, scalars)."""
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for name, parameter in module.named_parameters():
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            lowered = name.lower()
            if parameter.ndim < 2 or "norm" in lowered or lowered.endswith(".bias"):
                no_decay.append(parameter)
            else:
                decay.append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def build_optimizer(modules: list[nn.Module], optim: OptimConfig) -> torch.optim.AdamW:
    if optim.learning_rate <= 0:
        raise ConfigError(
            f"optim.learning_rate is {optim.learning_rate}; it must be above 0",
            "pass e.g. trainer.optim.learning_rate=2e-5",
        )
    groups = parameter_groups(modules, optim.weight_decay)
    if not groups:
        raise ConfigError("the model has no trainable parameters", "check model.use_lora and its targets")
    # the fused kernel (one pass over each tensor) when every parameter allows it: on a CPU it
    # is several times faster than the per-tensor loop, with the same update
    fused = all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"]
    )
    return torch.optim.AdamW(groups, lr=optim.learning_rate, eps=optim.adam_epsilon, fused=fused or None)


def warmup_steps(optim: OptimConfig, total_steps: int) -> int:
    if optim.warmup_steps < 0 or not 0.0 <= optim.warmup_ratio < 1.0:
        raise ConfigError(
            f"optim.warmup_steps={optim.warmup_steps}, optim.warmup_ratio={optim.warmup_ratio}: "
            "steps must be >= 0 and the ratio in [0, 1)",
            "fix the warmup option",
        )
    return optim.warmup_steps or int(optim.warmup_ratio * total_steps)


def lr_factor(step: int, scheduler: str, warmup: int, total: int) -> float:
    """The learning-rate multiplier for the step-th optimizer step (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / (warmup + 1)
    if scheduler == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if scheduler == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig, total_steps: int):
    if optim.scheduler not in SCHEDULERS:
        raise ConfigError(
            f"optim.scheduler is {optim.scheduler!r}", f"use one of {', '.join(SCHEDULERS)}"
        )
    warmup = warmup_steps(optim, total_steps)
    kind = optim.scheduler
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, kind, warmup, total_steps)
    )
