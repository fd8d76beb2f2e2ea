"""Noise schedules: functions `(beta1, beta2, n_T) -> betas` (a float64 tensor of length n_T).

They are registered as kind `noise_schedule`; `DDPM` turns betas into the cumulative products
the samplers use (`ScheduleTensors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from mlplatform.api import ConfigError

# DMLP overwrote its linear schedule with this constant beta (and used it as the fixed
# posterior variance); the "dmlp" preset reproduces it on purpose, and only when asked for.
DMLP_CONSTANT_BETA = 0.008


def _check_steps(n_T: int) -> None:
    if n_T < 1:
        raise ConfigError(f"the diffusion needs at least one step, got n_T={n_T}", "pass n_T >= 1")


def linear_schedule(beta1: float, beta2: float, n_T: int) -> torch.Tensor:
    """Betas rising linearly from beta1 (first step) to beta2 (last step), as in Ho et al."""
    _check_steps(n_T)
    if not 0.0 < beta1 <= beta2 < 1.0:
        raise ConfigError(
            f"a linear schedule needs 0 < beta1 <= beta2 < 1, got beta1={beta1}, beta2={beta2}",
            "pass e.g. beta1=0.0001 beta2=0.02",
        )
    return torch.linspace(beta1, beta2, n_T, dtype=torch.float64)


def cosine_schedule(beta1: float, beta2: float, n_T: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule (alpha_bar follows cos^2); betas clipped to
    [beta1, 0.999]; beta2 is not used (the cosine fixes the end point)."""
    _check_steps(n_T)
    steps = torch.arange(n_T + 1, dtype=torch.float64) / n_T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(min=min(beta1, 0.999), max=0.999)


def dmlp_schedule(beta1: float, beta2: float, n_T: int) -> torch.Tensor:
    """DMLP's effective schedule: a constant beta of 0.008 at every step (beta1/beta2 unused)."""
    _check_steps(n_T)
    return torch.full((n_T,), DMLP_CONSTANT_BETA, dtype=torch.float64)


@dataclass
class ScheduleTensors:
    """Everything the training loss and the samplers read, precomputed in float64 once."""

    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    _padded: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> ScheduleTensors:
        betas = betas.to(torch.float64)
        if betas.ndim != 1 or len(betas) == 0:
            raise ConfigError("a noise schedule must return a 1-d tensor of betas", "fix the schedule")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ConfigError(
                "a noise schedule returned betas outside (0, 1)", "check beta1, beta2 and the schedule"
            )
        alphas = 1 - betas
        return cls(betas, alphas, torch.cumprod(alphas, 0))

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar at integer steps t (t = -1 means "no noise": 1.0)."""
        padded = self._padded.get(t.device)
        if padded is None:  # built once per device: samplers call this at every step
            padded = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod]).to(t.device)
            self._padded[t.device] = padded
        return padded[t + 1]


SCHEDULES = {"linear": linear_schedule, "cosine": cosine_schedule, "dmlp": dmlp_schedule}
