"""DMLP's abstract classes, the extension points for user models.

Subclass them and register your class through `register_text_diffusion_components`; the trainer
builds the default `VAE`, `DDPM` and `VAE_DDPM` from `models.py`.
"""

from __future__ import annotations

import abc

import torch
from torch import nn


class VAE_Abs(nn.Module, abc.ABC):  # noqa: N801 - DMLP's name
    """A sentence VAE: `encoder` maps tokens to a Gaussian posterior (mu, logvar), `decoder`
    maps a latent (and tokens) to next-token logits."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, *args, **kwargs):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    @abc.abstractmethod
    def reparameterise(self, mu: torch.Tensor, logvar: torch.Tensor, nsamples: int = 1) -> torch.Tensor:
        """Sample z ~ N(mu, exp(logvar)): (batch, nz), or (batch, nsamples, nz) for nsamples > 1."""

    @abc.abstractmethod
    def forward(self, inputs, labels, *args, **kwargs):
        """Return (loss_rec, loss_kl, loss, latent_z, mu), the losses per sentence."""


class DDPM_Abs(nn.Module, abc.ABC):  # noqa: N801
    """A diffusion prior over latents: `eps_model(x_t, t)` denoises, `ddpm_schedule(beta1,
    beta2, n_T)` returns the betas, `criterion(pred, target)` (elementwise) is the loss."""

    def __init__(self, eps_model: nn.Module, betas, n_T: int, criterion, ddpm_schedule, *args, **kwargs):
        super().__init__()
        self.eps_model = eps_model
        self.betas = tuple(betas)
        self.n_T = int(n_T)
        self.criterion = criterion
        self.ddpm_schedule = ddpm_schedule

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, mu: torch.Tensor | None = None):
        """Return (loss per sample, timesteps used)."""

    @abc.abstractmethod
    def sample(self, n_sample: int, size, device, fp16: bool = False, **kwargs) -> torch.Tensor:
        """Generate n_sample latents of shape `size` (an int or a tuple)."""


class VAE_DDPM_Abs(nn.Module, abc.ABC):  # noqa: N801
    """A VAE and its DDPM prior trained together: loss = reconstruction + ddpm_weight * ddpm."""

    def __init__(self, model_vae: VAE_Abs, ddpm: DDPM_Abs, ddpm_weight: float, *args, **kwargs):
        super().__init__()
        self.model_vae = model_vae
        self.ddpm = ddpm
        self.ddpm_weight = float(ddpm_weight)

    @abc.abstractmethod
    def forward(self, inputs, labels, *args, **kwargs):
        """Return the VAE's outputs plus (ddpm_loss, timesteps), with `loss` the combined loss."""
