"""Using a trained model: `TextDiffusionPipeline.from_pretrained(DIR)` then `.sample(n)`,
`.reconstruct(sentences)` or `.interpolate(a, b)`. No Hydra here; job=sample and
task=text_diffusion call it.

`dtype` casts the weights (float32, bfloat16, float16 through the core's dtype policy, which
falls back to float32 for float16 on CPU); the samplers' arithmetic stays in float64 and the
decoder's next-token choice in float32 whatever the weights are."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mlplatform.api import ConfigError, get_registry, resolve_device, resolve_dtype

from .build import Artifact, load_artifact
from .connectors import DECODING


@dataclass
class Decoding:
    strategy: str = "greedy"
    top_k: int = 20
    top_p: float = 0.9
    temperature: float = 1.0
    max_new_tokens: int = 32

    def check(self) -> None:
        if self.strategy not in DECODING:
            raise ConfigError(f"unknown decoding {self.strategy!r}", f"pass one of {', '.join(DECODING)}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}", "pass e.g. 32")


class TextDiffusionPipeline:
    def __init__(self, artifact: Artifact, device: torch.device, use_ema: bool = True,
                 dtype: torch.dtype = torch.float32):
        self.artifact = artifact
        self.device = device
        self.model = artifact.model.eval()
        if use_ema and artifact.ema_eps_model is not None:
            self.model.ddpm.eps_model = artifact.ema_eps_model.eval()
        self.model.to(device=device, dtype=dtype)
        self.dtype = dtype
        self.codec = artifact.codec
        self.used_ema = use_ema and artifact.ema_eps_model is not None

    @classmethod
    def from_pretrained(cls, directory, *, device: str = "auto", use_ema: bool = True,
                        too_long: str | None = None, dtype: str = "float32") -> TextDiffusionPipeline:
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        return cls(load_artifact(directory, too_long=too_long, device=torch_device), torch_device, use_ema,
                   torch_dtype)

    @property
    def latent_size(self) -> int:
        return self.model.model_vae.latent_size

    def decode(self, z: torch.Tensor, decoding: Decoding | None = None, generator=None) -> list[str]:
        decoding = decoding or Decoding()
        decoding.check()
        ids, _ = self.model.model_vae.decoder.generate(
            z.to(self.device), self.codec.bos_id, self.codec.eos_id, decoding.max_new_tokens,
            strategy=decoding.strategy, top_k=decoding.top_k, top_p=decoding.top_p,
            temperature=decoding.temperature, generator=generator,
        )
        return [self.codec.decode(row) for row in ids]

    @torch.no_grad()
    def encode(self, sentences: list[str]) -> torch.Tensor:
        """Posterior means of the sentences (the too_long policy applies)."""
        if not sentences:
            raise ConfigError("no sentences to encode", "pass job.sentences=[...]")
        self.codec.check_lengths(sentences)
        ids, mask = self.codec.encoder_batch(sentences, self.device)
        mu, _ = self.model.model_vae.encode(ids, mask)
        return mu

    def sample_latents(self, n: int, *, sampler: str = "ddim", steps: int | None = 50, eta: float = 0.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        if n < 1:
            raise ConfigError(f"the sample count must be >= 1, got {n}", "pass job.num_samples=1 or more")
        run = get_registry().get("sampler", sampler)
        if sampler == "ddpm":
            steps = None
        return self.model.ddpm.sample(n, self.latent_size, self.device, sampler=run, steps=steps, eta=eta,
                                      generator=generator)

    def sample(self, n: int, *, sampler: str = "ddim", steps: int | None = 50, eta: float = 0.0,
               decoding: Decoding | None = None, seed: int = 0):
        generator = torch.Generator(self.device).manual_seed(seed)
        z = self.sample_latents(n, sampler=sampler, steps=steps, eta=eta, generator=generator)
        return self.decode(z, decoding, generator), z

    def reconstruct(self, sentences: list[str], *, decoding: Decoding | None = None, seed: int = 0):
        z = self.encode(sentences)
        return self.decode(z, decoding, torch.Generator(self.device).manual_seed(seed)), z

    def interpolate(self, first: str, second: str, points: int = 5, *, decoding: Decoding | None = None,
                    seed: int = 0):
        """Decode `points` latents evenly spaced on the line between the two sentences' means."""
        if points < 2:
            raise ConfigError(f"interpolation needs at least 2 points, got {points}", "pass job.interpolation_steps=5")
        ends = self.encode([first, second])
        weights = torch.linspace(0, 1, points, device=ends.device)[:, None]
        z = (1 - weights) * ends[0] + weights * ends[1]
        return self.decode(z, decoding, torch.Generator(self.device).manual_seed(seed)), z
