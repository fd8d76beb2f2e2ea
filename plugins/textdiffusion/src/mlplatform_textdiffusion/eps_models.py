"""Noise-prediction networks over a sentence latent: `forward(x, t) -> same shape as x`.

`x` is (batch, latent_dim) and `t` the integer diffusion steps (batch,). Every model is sized by
its arguments (DMLP hard-wired MLPSkipNet to 20 x 2048). They are registered as kind
`eps_model`; `build_eps_model` passes each class only the size options its __init__ accepts.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from mlplatform.api import ConfigError


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer steps (Vaswani et al. / Ho et al.), shape (batch, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / max(half, 1))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimeEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # the sinusoids are computed in float32, then cast to the weights' dtype (bf16/fp16 models)
        return self.mlp(timestep_embedding(t, self.dim).to(self.mlp[0].weight.dtype))


class MLPSkipNet(nn.Module):
    """An MLP whose every hidden layer also sees the input latent (skip connections) and the
    time embedding, as in DiffAE's latent DDPM."""

    def __init__(self, latent_dim: int, hidden_dim: int = 512, num_layers: int = 4, dropout: float = 0.0):
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"MLPSkipNet needs num_layers >= 1, got {num_layers}", "pass num_layers=4")
        self.latent_dim = latent_dim
        self.time = TimeEmbedding(hidden_dim)
        self.layers = nn.ModuleList()
        width = latent_dim
        for _ in range(num_layers):
            self.layers.append(nn.Linear(width + latent_dim, hidden_dim))
            width = hidden_dim
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time(t)
        h = x
        for layer, norm in zip(self.layers, self.norms, strict=True):
            h = layer(torch.cat([h, x], dim=-1))
            h = self.dropout(nn.functional.silu(norm(h + temb)))
        return self.out(h)


class TransformerNet(nn.Module):
    """A transformer encoder over the latent split into `num_tokens` chunks plus a time token."""

    def __init__(self, latent_dim: int, hidden_dim: int = 256, num_layers: int = 4, num_heads: int = 4,
                 num_tokens: int = 8, dropout: float = 0.0):
        super().__init__()
        if latent_dim % num_tokens:
            raise ConfigError(
                f"TransformerNet splits the latent into num_tokens={num_tokens} chunks, which does "
                f"not divide latent_dim={latent_dim}",
                "pick num_tokens dividing the latent size",
            )
        if hidden_dim % num_heads:
            raise ConfigError(
                f"TransformerNet: hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}",
                "pick num_heads dividing hidden_dim",
            )
        self.latent_dim, self.num_tokens = latent_dim, num_tokens
        chunk = latent_dim // num_tokens
        self.inp = nn.Linear(chunk, hidden_dim)
        self.pos = nn.Parameter(torch.zeros(num_tokens + 1, hidden_dim))
        self.time = TimeEmbedding(hidden_dim)
        layer = nn.TransformerEncoderLayer(hidden_dim, num_heads, 4 * hidden_dim, dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.out = nn.Linear(hidden_dim, chunk)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tokens = self.inp(x.view(x.shape[0], self.num_tokens, -1))
        h = torch.cat([self.time(t)[:, None], tokens], dim=1) + self.pos
        h = self.encoder(h)
        return self.out(h[:, 1:]).reshape(x.shape)


class LinearModel(nn.Module):
    """The smallest baseline: one linear map of [x, time embedding]."""

    def __init__(self, latent_dim: int, hidden_dim: int = 128):
        super().__init__()
        self.latent_dim = latent_dim
        self.time = TimeEmbedding(hidden_dim)
        self.linear = nn.Linear(latent_dim + hidden_dim, latent_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([x, self.time(t)], dim=-1))


class ResidualBlock(nn.Module):
    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        y = self.fc1(nn.functional.silu(self.norm(h)) + temb)
        return h + self.fc2(self.dropout(nn.functional.silu(y)))  # the residual DMLP lacked


class ResidualLinear(nn.Module):
    """Pre-norm residual MLP blocks (h + f(h, t)) between an input and an output projection."""

    def __init__(self, latent_dim: int, hidden_dim: int = 512, num_layers: int = 4, dropout: float = 0.0):
        super().__init__()
        self.latent_dim = latent_dim
        self.time = TimeEmbedding(hidden_dim)
        self.inp = nn.Linear(latent_dim, hidden_dim)
        self.blocks = nn.ModuleList(ResidualBlock(hidden_dim, dropout) for _ in range(num_layers))
        self.out = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time(t)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h)


EPS_MODELS = {
    "mlp_skip": MLPSkipNet,
    "transformer": TransformerNet,
    "linear": LinearModel,
    "residual": ResidualLinear,
}


def build_eps_model(factory, latent_dim: int, **options) -> nn.Module:
    """Call a registered eps-model with `latent_dim` and those size options its signature
    accepts (a plugin's model may take only latent_dim). Unset (None) options are left out."""
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    chosen = {k: v for k, v in options.items() if v is not None and (takes_any or k in params)}
    return factory(latent_dim, **chosen)
