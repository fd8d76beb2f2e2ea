"""Winograd F(4x4,3x3) convolutions: the same results as Conv2d, the original model left alone,
per-layer choices, and a graph torch.export keeps dynamic (no compile needed for these)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
from mlplatform_compile.backends.aot_inductor import AOTInductorBackend
from mlplatform_compile.backends.base import CompileRequest
from mlplatform_compile.specs import Dim, InputSpec
from mlplatform_compile.winograd import eligible, parse_policy, rewrite_convolutions, winograd_conv

from mlplatform.errors import ConfigError

CPU = torch.device("cpu")


def rel_error(out, ref):
    return ((out - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize(
    "channels, size, bias, padding",
    [((3, 8), (1, 1), True, 1), ((16, 5), (5, 7), True, 1), ((8, 8), (12, 8), False, "same")],
)
def test_winograd_conv_matches_conv2d(channels, size, bias, padding):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(*channels, 3, padding=padding, bias=bias)
    x = torch.randn(2, channels[0], *size)
    with torch.no_grad():
        ref, out = conv(x), winograd_conv(conv)(x)
    assert out.shape == ref.shape
    assert rel_error(out, ref) < 2e-5  # fp32 Winograd F(4x4,3x3): ~1e-6..1e-5


def test_only_plain_3x3_same_convolutions_are_eligible():
    assert eligible(torch.nn.Conv2d(4, 4, 3, padding=1))
    assert not eligible(torch.nn.Conv2d(4, 4, 3, padding=1, stride=2))
    assert not eligible(torch.nn.Conv2d(4, 4, 1))
    assert not eligible(torch.nn.Conv2d(4, 4, 3, padding=0))
    assert not eligible(torch.nn.Conv2d(4, 4, 3, padding=2, dilation=2))
    assert not eligible(torch.nn.Conv2d(4, 4, 3, padding=1, groups=2))
    assert not eligible(torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    assert not eligible(torch.nn.Conv2d(4, 4, 3, padding=1).to(torch.bfloat16))
    assert not eligible(torch.nn.Linear(4, 4))


def small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.SiLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1, stride=2),  # not eligible: stays
        torch.nn.Conv2d(16, 8, 3, padding=1),
    ).eval()


def test_rewrite_replaces_eligible_layers_in_a_copy():
    net = small_net()
    x = torch.randn(2, 3, 10, 14)
    with torch.no_grad():
        ref = net(x)
    rewritten, choices = rewrite_convolutions(net, True, (x,), CPU)
    assert [c.name for c in choices] == ["0", "3"] and all(c.winograd for c in choices)
    assert type(rewritten[0]).__name__ == "WinogradConv2d" and isinstance(rewritten[2], torch.nn.Conv2d)
    assert all(isinstance(net[i], torch.nn.Conv2d) for i in (0, 2, 3))  # the reference is untouched
    with torch.no_grad():
        assert torch.equal(net(x), ref)
        assert rel_error(rewritten(x), ref) < 2e-5


def test_auto_times_each_layer_at_its_real_input_shape():
    net = small_net()
    x = torch.randn(1, 3, 12, 12)
    _, choices = rewrite_convolutions(net, "auto", (x,), CPU, runs=1)
    by_name = {c.name: c for c in choices}
    assert by_name["0"].input_shape == [1, 3, 12, 12]
    assert by_name["3"].input_shape == [1, 16, 6, 6]  # after the stride-2 layer
    for choice in choices:
        assert choice.direct_ms > 0 and choice.winograd_ms > 0
        assert choice.winograd == (choice.winograd_ms <= 0.95 * choice.direct_ms)


def test_off_and_cuda_auto_leave_the_model_alone():
    net = small_net()
    x = torch.randn(1, 3, 8, 8)
    assert rewrite_convolutions(net, False, (x,), CPU) == (net, [])
    cuda = types.SimpleNamespace(type="cuda")  # auto defers to cuDNN, which picks Winograd itself
    assert rewrite_convolutions(net, "auto", (x,), cuda) == (net, [])


def test_policy_values():
    assert parse_policy("auto") == "auto"
    assert parse_policy(True) is True and parse_policy("false") is False
    with pytest.raises(ConfigError, match="auto, true or false"):
        parse_policy("sometimes")


class Positional(torch.nn.Module):
    """The form builders hand to backends: inputs positionally in, a tuple out."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, *inputs):
        return (self.net(*inputs),)


def export_request(net, spec, example, policy):
    """Export as the aot_inductor backend does (its Winograd rewrite included), no compile."""
    request = CompileRequest(Positional(net), [spec], (example,), CPU, "float32", Path("."), Path("."))
    program = AOTInductorBackend(winograd=policy).export_with_winograd(request)
    return (lambda x: program.module()(x)[0]), request.extra


def test_export_keeps_height_and_width_dynamic():
    """Sizes that are and are not multiples of the tile share one exported graph."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(16, 8, 3, padding=1)
    ).eval()
    spec = InputSpec("x", (Dim("batch", 1, 4), 3, Dim("height", 5, 33), Dim("width", 5, 33)))
    program, extra = export_request(net, spec, torch.randn(2, 3, 9, 14), True)
    assert [layer["winograd"] for layer in extra["winograd_layers"]] == [True, True]
    for shape in [(1, 3, 5, 33), (3, 3, 16, 12), (4, 3, 33, 7)]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert rel_error(program(x), net(x)) < 2e-5


def test_export_falls_back_to_direct_convolutions_when_a_layer_may_see_one_tile():
    net = small_net()  # after the stride-2 layer, 5..12 px become 3..6: a single tile at 3 or 4
    spec = InputSpec("x", (Dim("batch", 1, 4), 3, Dim("height", 5, 12), Dim("width", 5, 12)))
    program, extra = export_request(net, spec, torch.randn(2, 3, 9, 11), True)
    assert extra["winograd_layers"] == [] and extra["winograd_fallback"]
    x = torch.randn(1, 3, 5, 12)
    with torch.no_grad():
        assert torch.allclose(program(x), net(x), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_aot_inductor_compiles_winograd_layers_to_the_same_results(tmp_path):
    """The compiled package, not only the exported graph, matches the direct convolutions."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.GroupNorm(4, 16),
        torch.nn.SiLU(),
        torch.nn.Upsample(scale_factor=2.0, mode="nearest"),
        torch.nn.Conv2d(16, 8, 3, padding=1),
    ).eval()
    spec = InputSpec("x", (Dim("batch", 1, 2), 8, Dim("height", 6, 20), Dim("width", 6, 20)))
    request = CompileRequest(
        Positional(net), [spec], (torch.randn(2, 8, 9, 14),), CPU, "float32", tmp_path, tmp_path / "cache"
    )
    run = AOTInductorBackend(winograd=True).compile(request)
    assert [layer["winograd"] for layer in request.extra["winograd_layers"]] == [True, True]
    assert request.extra["freezing_off_for_winograd"] is True  # freezing miscompiles deep ones
    for shape in [(1, 8, 6, 20), (2, 8, 13, 7), (2, 8, 20, 20)]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert rel_error(run(x)[0], net(x)) < 2e-5
