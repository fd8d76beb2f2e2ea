"""Winograd F(4x4, 3x3) convolution: the same 3x3 convolution with 4x fewer multiplications.

On CPU the SD VAE decoder spends most of its time in oneDNN's direct 3x3 convolutions, which
already run near the machine's fp32 peak, so compilation alone cannot make it much faster. Winograd
(Lavin & Gray, 2015) computes each 4x4 output tile from a 6x6 input tile with 36 multiplications
per channel pair instead of 144. Here every step is a GEMM or a copy, laid out channels-last, so
torch.export and AOTInductor compile it like any other graph:

    tiles d (6x6 per output tile) -> V = kron(B^T, B^T) d -> M = V @ U (36 batched GEMMs over
    channels, U = G g G^T precomputed from the weights) -> Y = kron(A^T, A^T) M -> crop.

It costs accuracy (about 1e-5 relative in fp32, against ~1e-7 for direct) and memory (U is 4x the
weight), and it only pays off for wide layers: `rewrite_convolutions(..., "auto")` times both
algorithms on each layer's real input shape and keeps Winograd only where it is faster. The
build's parity check against eager still decides whether the artifact is saved.

Experimental and off by default: Inductor's freezing pass miscompiles the rewritten SD VAE
decoder, so the aot_inductor backend compiles Winograd builds without freezing, and the gain
(about 1.2x on that decoder on CPU) costs several times the compile time. docs/compile.md has
the figures.
"""

from __future__ import annotations

import copy
import functools
import logging
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

TILE = 4  # output tile side (m)
TAPS = TILE + 2  # input tile side (m + r - 1)
MIN_GAIN = 0.95  # "auto" keeps Winograd only when it takes at most 95% of the direct time

# F(4x4, 3x3) with interpolation points 0, 1, -1, 2, -2 and infinity
_BT = [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
]
_G = [
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
]
_AT = [
    [1, 1, 1, 1, 1, 0],
    [0, 1, -1, 2, -2, 0],
    [0, 1, 1, 4, 4, 0],
    [0, 1, -1, 8, -8, 1],
]


def parse_policy(value: Any) -> bool | str:
    """auto / true / false, also as the strings a command line gives."""
    text = str(value).strip().lower()
    if text in {"auto", "true", "false", "1", "0", "on", "off", "yes", "no"}:
        return "auto" if text == "auto" else text in {"true", "1", "on", "yes"}
    from mlplatform.api import ConfigError

    raise ConfigError(
        f"winograd must be auto, true or false, got {value!r}",
        "set backend.winograd=auto (time each layer), true or false",
    )


def eligible(module) -> bool:
    """A plain 3x3, stride-1, 'same'-padded, ungrouped, undilated float32 Conv2d."""
    import torch

    return (
        isinstance(module, torch.nn.Conv2d)
        and module.kernel_size == (3, 3)
        and module.stride == (1, 1)
        and module.padding in ((1, 1), "same")
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and module.weight.dtype == torch.float32
    )


@functools.cache
def _winograd_module_class():
    """Defined on first use, so importing this module does not import torch."""
    import torch
    import torch.nn.functional as F

    class WinogradConv2d(torch.nn.Module):
        """Drop-in replacement for an eligible Conv2d (same inputs, outputs and bias)."""

        def __init__(self, conv: torch.nn.Conv2d):
            super().__init__()
            bt, g, at = (torch.tensor(m, dtype=torch.float64) for m in (_BT, _G, _AT))
            weight = conv.weight.detach().to("cpu", torch.float64)
            # U[(i, j), cin, cout] = (G w[cout, cin] G^T)[i, j]
            u = torch.einsum("ik,ockl,jl->ijco", g, weight, g).reshape(TAPS * TAPS, -1, conv.out_channels)
            device, dtype = conv.weight.device, conv.weight.dtype
            self.register_buffer("u", u.to(device, dtype).contiguous())
            self.register_buffer("input_transform", torch.kron(bt, bt).to(device, dtype))
            self.register_buffer("output_transform", torch.kron(at, at).to(device, dtype))
            self.bias = None if conv.bias is None else torch.nn.Parameter(conv.bias.detach().clone())
            self.out_channels = conv.out_channels

        def forward(self, x):
            # Shapes stay symbolic under torch.export: no reshape of a permuted tensor and no
            # slice that may or may not be a no-op (both would become guards on h % 4).
            n, c, h, w = x.shape
            tiles_h, tiles_w = (h + TILE - 1) // TILE, (w + TILE - 1) // TILE
            tiles = n * tiles_h * tiles_w
            x = x.permute(0, 2, 3, 1)  # channels-last: each tile position is a channel vector
            x = F.pad(x, (0, 0, 1, tiles_w * TILE + 1 - w, 1, tiles_h * TILE + 1 - h))
            d = torch.stack(
                [
                    x[:, i : i + TILE * tiles_h : TILE, j : j + TILE * tiles_w : TILE]
                    for i in range(TAPS)
                    for j in range(TAPS)
                ]
            )  # [36, n, tiles_h, tiles_w, c]: input tile element (i, j) of every tile
            v = (self.input_transform @ d.view(TAPS * TAPS, tiles * c)).view(TAPS * TAPS, tiles, c)
            m = torch.bmm(v, self.u)  # 36 GEMMs: [tiles, cin] @ [cin, cout]
            y = self.output_transform @ m.view(TAPS * TAPS, tiles * self.out_channels)
            y = y.view(TILE, TILE, n, tiles_h, tiles_w, self.out_channels)
            y = y.permute(2, 3, 0, 4, 1, 5)  # n, tile row, row in tile, tile col, col in tile, o
            rows = torch.arange(h, device=x.device)[:, None]
            cols = torch.arange(w, device=x.device)
            y = y[:, rows // TILE, rows % TILE, cols // TILE, cols % TILE]  # n, h, w, o (cropped)
            if self.bias is not None:
                y = y + self.bias
            return y.permute(0, 3, 1, 2)

    return WinogradConv2d


def winograd_conv(conv):
    """A WinogradConv2d computing what `conv` computes."""
    return _winograd_module_class()(conv)


@dataclass
class LayerChoice:
    """What `rewrite_convolutions` decided for one eligible layer (recorded in the manifest)."""

    name: str
    input_shape: list[int]
    channels: list[int]
    winograd: bool
    direct_ms: float | None = None
    winograd_ms: float | None = None


def _median_ms(fn, x, runs: int) -> float:
    times = []
    fn(x)
    for _ in range(runs):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _input_shapes(module, example_inputs, names: list[str]) -> dict[str, tuple[int, ...]]:
    """The input shape each named conv sees when `module` runs on the example inputs."""
    import torch

    shapes: dict[str, tuple[int, ...]] = {}

    def recorder(name: str):
        def hook(_module, args) -> None:  # returning a value would replace the inputs
            shapes.setdefault(name, tuple(args[0].shape))

        return hook

    handles = [module.get_submodule(name).register_forward_pre_hook(recorder(name)) for name in names]
    try:
        with torch.no_grad():
            module(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def rewrite_convolutions(module, policy: Any, example_inputs, device, runs: int = 3):
    """Return (copy of `module` with chosen convs replaced, list of LayerChoice).

    policy: False leaves `module` as is; True replaces every eligible conv; "auto" replaces those
    that run faster as Winograd on this machine at their example input shape, and does nothing
    on CUDA (cuDNN already picks Winograd kernels itself). The original module is never changed:
    it stays the eager reference the build is verified against.
    """
    import torch

    policy = parse_policy(policy)
    if policy is False or (policy == "auto" and getattr(device, "type", "cpu") != "cpu"):
        return module, []
    names = [name for name, sub in module.named_modules() if eligible(sub)]
    if not names:
        return module, []
    shapes = _input_shapes(module, example_inputs, names) if policy == "auto" else {}
    rewritten = copy.deepcopy(module)
    choices = []
    generator = torch.Generator().manual_seed(0)
    for name in names:
        conv = rewritten.get_submodule(name)
        replacement = winograd_conv(conv)
        choice = LayerChoice(
            name, list(shapes.get(name, ())), [conv.in_channels, conv.out_channels], True
        )
        if policy == "auto":
            if name not in shapes:  # never ran on the example inputs
                continue
            x = torch.randn(shapes[name], generator=generator).to(conv.weight)
            with torch.no_grad():
                choice.direct_ms = round(_median_ms(conv, x, runs), 3)
                choice.winograd_ms = round(_median_ms(replacement, x, runs), 3)
            choice.winograd = choice.winograd_ms <= MIN_GAIN * choice.direct_ms
        if choice.winograd:
            parent, _, attr = name.rpartition(".")
            setattr(rewritten.get_submodule(parent) if parent else rewritten, attr, replacement)
        choices.append(choice)
    chosen = sum(c.winograd for c in choices)
    log.info("winograd=%s: %d of %d eligible 3x3 convolutions use Winograd F(4x4,3x3)",
             policy, chosen, len(names))
    if not chosen:
        return module, choices
    return rewritten, choices


def describe(choices: list[LayerChoice]) -> list[dict[str, Any]]:
    return [asdict(choice) for choice in choices]
