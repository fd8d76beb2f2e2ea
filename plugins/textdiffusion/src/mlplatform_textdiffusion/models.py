"""The default models: `VAE`, `DDPM`, `VAE_DDPM`."""

from __future__ import annotations

import logging
from contextlib import nullcontext

import torch
from torch import nn

from mlplatform.api import ConfigError

from .abstract import DDPM_Abs, VAE_Abs, VAE_DDPM_Abs
from .schedules import ScheduleTensors, linear_schedule

log = logging.getLogger(__name__)

PREDICTIONS = ("eps", "x0", "v")


class VAE(VAE_Abs):
    """Encoder connector -> Gaussian posterior -> decoder connector.

    The KL term is part of the loss (DMLP computed it and dropped it): loss = loss_rec +
    kl_weight * KL, where a trainer anneals `kl_weight` and `free_bits` (nats per latent
    dimension, averaged over the batch) stops the KL of dimensions below it from being pushed
    further down (Kingma et al. 2016, as in Optimus). `posterior_logvar` set to a number fixes
    the posterior's log-variance instead of learning it.
    """

    def __init__(self, encoder, decoder, latent_size: int, *, kl_weight: float = 1.0,
                 free_bits: float = 0.0, posterior_logvar: float | None = None):
        super().__init__(encoder, decoder)
        if encoder.latent_size != latent_size or decoder.latent_size != latent_size:
            raise ConfigError(
                f"latent sizes disagree: VAE {latent_size}, encoder {encoder.latent_size}, "
                f"decoder {decoder.latent_size}",
                "build the encoder and decoder connectors with the VAE's latent_size",
            )
        self.latent_size = latent_size
        self.kl_weight = kl_weight
        self.free_bits = free_bits
        self.posterior_logvar = posterior_logvar

    def encode(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None):
        mu, logvar = self.encoder(inputs, attention_mask)
        if self.posterior_logvar is not None:
            logvar = torch.full_like(mu, float(self.posterior_logvar))
        return mu, logvar

    def reparameterise(self, mu, logvar, nsamples: int = 1):
        std = (0.5 * logvar).exp()
        if nsamples == 1:
            return mu + std * torch.randn_like(mu)
        eps = torch.randn(mu.shape[0], nsamples, mu.shape[1], device=mu.device, dtype=mu.dtype)
        return mu[:, None] + std[:, None] * eps

    reparametrize = reparameterise  # DMLP's spelling

    @staticmethod
    def kl_per_dim(mu, logvar) -> torch.Tensor:
        """KL(N(mu, exp(logvar)) || N(0, 1)) per sentence and dimension."""
        return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)

    def kl_term(self, kl: torch.Tensor) -> torch.Tensor:
        """The per-sentence KL that enters the loss, with free bits applied."""
        if self.free_bits <= 0:
            return kl.sum(-1)
        active = (kl.mean(0) > self.free_bits).to(kl.dtype)  # dimensions above the floor
        floor = self.free_bits * (1 - active)
        return (kl * active + floor).sum(-1)

    def forward(self, inputs, labels, inputs_mask=None, labels_mask=None):
        mu, logvar = self.encode(inputs, inputs_mask)
        latent_z = self.reparameterise(mu, logvar)
        loss_rec = self.decoder.reconstruction_loss(labels, latent_z, labels_mask)
        kl = self.kl_per_dim(mu, logvar)
        loss_kl = kl.sum(-1)
        loss = loss_rec + self.kl_weight * self.kl_term(kl)
        return loss_rec, loss_kl, loss, latent_z, mu


class DDPM(DDPM_Abs):
    """Gaussian diffusion over latents with a learned denoiser.

    `prediction` is what eps_model outputs: "eps" (the noise), "x0" (the clean latent) or "v"
    (Salimans & Ho's velocity); `predict` converts any of them to (eps, x0) for the samplers.
    `train_on` picks the clean latent the prior learns: the posterior sample z ("z", as DMLP)
    or its mean ("mu").
    """

    def __init__(self, eps_model, betas=(1e-4, 0.02), n_T: int = 1000, criterion=None,
                 ddpm_schedule=linear_schedule, *, prediction: str = "eps", train_on: str = "z"):
        super().__init__(eps_model, betas, n_T, criterion or nn.MSELoss(reduction="none"), ddpm_schedule)
        if prediction not in PREDICTIONS:
            raise ConfigError(f"unknown prediction {prediction!r}", f"pass one of {', '.join(PREDICTIONS)}")
        if train_on not in ("z", "mu"):
            raise ConfigError(f"unknown train_on {train_on!r}", "pass z or mu")
        self.prediction = prediction
        self.train_on = train_on
        self.schedule = ScheduleTensors.from_betas(ddpm_schedule(self.betas[0], self.betas[1], self.n_T))
        if len(self.schedule.betas) != self.n_T:
            raise ConfigError(
                f"the noise schedule returned {len(self.schedule.betas)} betas for n_T={self.n_T}",
                "fix the schedule function",
            )
        self.register_buffer("sqrt_ab", self.schedule.alphas_cumprod.sqrt().float(), persistent=False)
        self.register_buffer("sqrt_1mab", (1 - self.schedule.alphas_cumprod).sqrt().float(), persistent=False)

    @property
    def latent_dim(self) -> int | None:
        return getattr(self.eps_model, "latent_dim", None)

    def target(self, x0, eps, t):
        a, s = self.sqrt_ab[t][:, None].to(x0.dtype), self.sqrt_1mab[t][:, None].to(x0.dtype)
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x0
        return a * eps - s * x0

    def forward(self, x, mu=None):
        x0 = mu if (self.train_on == "mu" and mu is not None) else x
        t = torch.randint(0, self.n_T, (x0.shape[0],), device=x0.device)
        eps = torch.randn_like(x0)
        a, s = self.sqrt_ab[t][:, None].to(x0.dtype), self.sqrt_1mab[t][:, None].to(x0.dtype)
        x_t = a * x0 + s * eps
        out = self.eps_model(x_t, t)
        loss = self.criterion(out, self.target(x0, eps, t)).flatten(1).mean(-1)
        return loss, t

    def predict(self, x_t: torch.Tensor, t: torch.Tensor):
        """(eps, x0) in float64 from the model's output at noisy latents x_t and steps t."""
        param = next(self.eps_model.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        out = self.eps_model(x_t.to(dtype), t).to(torch.float64)
        x = x_t.to(torch.float64)
        ab = self.schedule.alpha_bar(t).to(x.device)[:, None]
        a, s = ab.sqrt(), (1 - ab).sqrt()
        if self.prediction == "eps":
            eps = out
            x0 = (x - s * eps) / a
        elif self.prediction == "x0":
            x0 = out
            eps = (x - a * x0) / s
        else:
            x0 = a * x - s * out
            eps = s * x + a * out
        return eps, x0

    @torch.no_grad()
    def sample(self, n_sample: int, size, device, fp16: bool = False, *, sampler=None, steps=None,
               eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """n_sample latents: noise of shape (n_sample, *size) run through `sampler` (a
        registered sampler callable; default: ancestral DDPM). fp16 autocasts the eps-model to
        float16 on an accelerator; on CPU it is ignored with a warning (the core's policy)."""
        from .samplers import ddpm_sample

        if n_sample < 1:
            raise ConfigError(f"the sample count must be >= 1, got {n_sample}", "pass a positive count")
        shape = (n_sample, *((size,) if isinstance(size, int) else tuple(size)))
        device = torch.device(device)
        noise = torch.randn(shape, generator=generator, device=device if generator is None else generator.device)
        noise = noise.to(device)
        run = sampler or ddpm_sample
        context = nullcontext()
        if fp16:
            if device.type != "cpu":
                context = torch.autocast(device.type, dtype=torch.float16)
            else:
                log.warning("fp16 sampling needs an accelerator; sampling in float32 on %s", device)
        with context:
            return run(self, noise, steps=steps, eta=eta, generator=generator).float()


class VAE_DDPM(VAE_DDPM_Abs):  # noqa: N801
    """loss = mean VAE loss + ddpm_weight * mean DDPM loss (DMLP's alpha).

    `mode` picks what trains: "joint" (both; the DDPM's gradient reaches the encoder), "vae"
    (the VAE alone; ddpm_loss is zeros) or "ddpm" (the prior on latents of the frozen VAE)."""

    def forward(self, inputs, labels, inputs_mask=None, labels_mask=None, mode: str = "joint"):
        if mode == "ddpm":
            with torch.no_grad():
                loss_rec, loss_kl, _, latent_z, mu = self.model_vae(inputs, labels, inputs_mask, labels_mask)
            ddpm_loss, t = self.ddpm(latent_z.detach(), mu.detach())
            return loss_rec, loss_kl, ddpm_loss.mean(), latent_z, mu, ddpm_loss, t
        loss_rec, loss_kl, loss, latent_z, mu = self.model_vae(inputs, labels, inputs_mask, labels_mask)
        if mode == "vae":
            zeros = torch.zeros_like(loss)
            return loss_rec, loss_kl, loss.mean(), latent_z, mu, zeros, zeros.long()
        if mode != "joint":
            raise ConfigError(f"unknown training mode {mode!r}", "pass joint, vae or ddpm")
        ddpm_loss, t = self.ddpm(latent_z, mu)
        total = loss.mean() + self.ddpm_weight * ddpm_loss.mean()
        return loss_rec, loss_kl, total, latent_z, mu, ddpm_loss, t


def check_latent_sizes(vae_latent: int, ddpm: DDPM_Abs) -> None:
    """A DDPM over latents of another size than the VAE's is a configuration mistake."""
    dim = getattr(ddpm.eps_model, "latent_dim", None)
    if dim is not None and dim != vae_latent:
        raise ConfigError(
            f"latent-size mismatch: the VAE's latent has {vae_latent} dimensions, the DDPM's "
            f"eps-model {dim}",
            "use the same size for both (leave the eps-model's latent_dim unset to follow the VAE)",
        )
