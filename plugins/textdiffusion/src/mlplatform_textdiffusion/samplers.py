"""Samplers over a trained DDPM: ancestral DDPM and DDIM (with inversion).

A sampler is a callable `(ddpm, noise, *, steps, eta, generator) -> x0` registered as kind
`sampler`; `ddpm` provides `schedule` (ScheduleTensors) and `predict(x_t, t) -> (eps, x0)`.
All arithmetic runs in float64 on the noise's device, then returns the noise's dtype.
"""

from __future__ import annotations

import torch

from mlplatform.api import ConfigError


def _steps_tensor(value: int, batch: int, device) -> torch.Tensor:
    return torch.full((batch,), value, dtype=torch.long, device=device)


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


@torch.no_grad()
def ddpm_sample(ddpm, noise: torch.Tensor, *, steps: int | None = None, eta: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Ancestral sampling over all n_T steps with the posterior variance beta~_t (Ho et al.).
    `steps` must be None or n_T and `eta` is not used: ancestral sampling has neither."""
    n_T = ddpm.n_T
    if steps not in (None, n_T):
        raise ConfigError(
            f"the ddpm sampler always runs all {n_T} steps (got steps={steps})",
            "use sampler=ddim for fewer steps, or leave steps unset",
        )
    sched = ddpm.schedule
    x = noise.to(torch.float64)
    batch = x.shape[0]
    for t in range(n_T - 1, -1, -1):
        t_vec = _steps_tensor(t, batch, x.device)
        _, x0 = ddpm.predict(x, t_vec)
        ab_t = sched.alphas_cumprod[t].item()
        ab_prev = sched.alphas_cumprod[t - 1].item() if t > 0 else 1.0
        beta_t = sched.betas[t].item()
        coef_x0 = ab_prev**0.5 * beta_t / (1 - ab_t)
        coef_xt = (1 - beta_t) ** 0.5 * (1 - ab_prev) / (1 - ab_t)
        mean = coef_x0 * x0 + coef_xt * x
        if t > 0:
            var = (1 - ab_prev) / (1 - ab_t) * beta_t
            x = mean + var**0.5 * _randn_like(x, generator)
        else:
            x = mean
    return x.to(noise.dtype)


def ddim_timesteps(n_T: int, steps: int) -> list[int]:
    """`steps` timesteps spread evenly over [0, n_T - 1], descending, last one n_T - 1."""
    if not 1 <= steps <= n_T:
        raise ConfigError(
            f"DDIM needs 1 <= steps <= n_T ({n_T}), got steps={steps}", f"pass steps between 1 and {n_T}"
        )
    grid = torch.linspace(0, n_T - 1, steps).round().long().unique().tolist()
    return sorted(grid, reverse=True)


def _ddim_step(ddpm, x, t: int, t_prev: int, eta: float, generator):
    sched = ddpm.schedule
    eps, x0 = ddpm.predict(x, _steps_tensor(t, x.shape[0], x.device))
    ab_t = sched.alphas_cumprod[t].item()
    ab_prev = sched.alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
    sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)) ** 0.5
    direction = max(1 - ab_prev - sigma**2, 0.0) ** 0.5 * eps
    x_prev = ab_prev**0.5 * x0 + direction
    if sigma > 0:
        x_prev = x_prev + sigma * _randn_like(x, generator)
    return x_prev


@torch.no_grad()
def ddim_sample(ddpm, noise: torch.Tensor, *, steps: int | None = 50, eta: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """DDIM (Song et al.) on `steps` of the n_T timesteps; eta=0 is deterministic, eta=1
    matches DDPM's variance on the sub-sequence."""
    if eta < 0:
        raise ConfigError(f"DDIM eta must be >= 0, got {eta}", "pass eta between 0 and 1")
    times = ddim_timesteps(ddpm.n_T, ddpm.n_T if steps is None else steps)
    x = noise.to(torch.float64)
    for i, t in enumerate(times):
        t_prev = times[i + 1] if i + 1 < len(times) else -1
        x = _ddim_step(ddpm, x, t, t_prev, eta, generator)
    return x.to(noise.dtype)


@torch.no_grad()
def ddim_invert(ddpm, x0: torch.Tensor, *, steps: int | None = 50, fixed_point_iters: int = 10) -> torch.Tensor:
    """The noise that deterministic DDIM (eta=0, same steps) maps to `x0`.

    Each DDIM step x_prev = f(x_t) is inverted by fixed-point iteration on x_t (the model is
    evaluated at the unknown x_t), so sample(invert(x0)) returns x0 up to the iteration's
    tolerance, not just approximately as with the usual one-pass inversion."""
    times = ddim_timesteps(ddpm.n_T, ddpm.n_T if steps is None else steps)
    sched = ddpm.schedule
    x = x0.to(torch.float64)
    ascending = list(reversed(times))
    for i, t in enumerate(ascending):
        t_prev = ascending[i - 1] if i > 0 else -1
        ab_t = sched.alphas_cumprod[t].item()
        ab_prev = sched.alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
        t_vec = _steps_tensor(t, x.shape[0], x.device)
        guess = x
        for _ in range(max(1, fixed_point_iters)):
            eps, _ = ddpm.predict(guess, t_vec)
            x0_hat = (x - (1 - ab_prev) ** 0.5 * eps) / ab_prev**0.5
            guess = ab_t**0.5 * x0_hat + (1 - ab_t) ** 0.5 * eps
        x = guess
    return x.to(x0.dtype)


SAMPLERS = {"ddpm": ddpm_sample, "ddim": ddim_sample}
