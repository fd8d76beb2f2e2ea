"""Fast tests (no compiler): the parity check lets no NaN / inf through, pairs outputs with their
names strictly, and records the error it actually measured."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from mlplatform_compile import Backend, CompiledModule, builder_class
from mlplatform_compile.modules import NamedModule
from mlplatform_compile.parity import compare, pair_outputs, worst
from mlplatform_compile.specs import verification_sets
from mlplatform_compile.verify import check_parity

from mlplatform.api import ArtifactError, MLPlatformError

INF = float("inf")
NAN = float("nan")


def make(backend, tmp_path, **kw):
    return builder_class("vae_decode")(
        backend=backend,
        hf_hub="builtin:tiny_vae",
        random_weights=True,
        label="parity",
        build_kwargs={"batch_size": [1, 2], "resolution": [32, 48]},
        cache_dir=tmp_path / "cache",
        benchmark_runs=0,
        **kw,
    )


def assert_nothing_saved(tmp_path):
    cache = tmp_path / "cache"
    entries = list(cache.iterdir()) if cache.exists() else []
    # artifacts are named directories; staging ones end in .staging; `.locks`, `_compiler_cache`
    # are the cache's own
    saved = [p for p in entries if not p.name.startswith((".", "_")) or ".staging" in p.name]
    assert saved == [], saved
    assert not list(cache.rglob("manifest.json"))


def one_shape(**outputs):
    return {"example": {"sizes": {}, "outputs": outputs}}


# ---- compare ----------------------------------------------------------------------------------


def test_identical_outputs_have_zero_error():
    x = torch.randn(2, 3, 4, 4)
    figures = compare(x, x.clone())
    assert figures["rel"] == 0.0 and figures["max_abs"] == 0.0
    assert figures["finite"] is True and figures["reference_finite"] is True
    assert worst(one_shape(image=figures)) == 0.0


def test_relative_error_is_max_abs_over_max_reference():
    ref = torch.tensor([1.0, -4.0, 2.0])
    figures = compare(ref, ref + torch.tensor([0.0, 0.5, -0.25]))
    assert figures["max_abs"] == 0.5 and figures["rel"] == 0.125


@pytest.mark.parametrize(
    ("ref_value", "out_value"),
    [(NAN, None), (None, NAN), (INF, None), (None, -INF), (NAN, NAN), (INF, INF)],
    ids=[
        "nan-reference",
        "nan-candidate",
        "inf-reference",
        "inf-candidate",
        "nan-both",
        "inf-both",
    ],
)
def test_a_non_finite_value_on_either_side_fails(ref_value, out_value):
    """One non-finite element (None: that side is left finite), even at the same place on both
    sides, makes every figure inf and says which side it was on."""
    ref = torch.randn(1, 3, 8, 8)
    out = ref.clone()
    if ref_value is not None:
        ref[0, 1, 2, 3] = ref_value
    if out_value is not None:
        out[0, 1, 2, 3] = out_value
    figures = compare(ref, out)
    assert figures["rel"] == INF and figures["max_abs"] == INF
    assert figures["reference_finite"] is (ref_value is None)
    assert figures["finite"] is (out_value is None)
    assert worst(one_shape(image=figures)) == INF


def test_shape_mismatch_fails():
    figures = compare(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    assert figures["rel"] == INF and figures["shape_mismatch"] is True
    assert worst(one_shape(image=figures)) == INF


# ---- worst ------------------------------------------------------------------------------------


def test_worst_is_the_largest_finite_error():
    parity = {
        "min": {"outputs": {"a": {"rel": 1e-6, "finite": True}, "b": {"rel": 3e-6}}},
        "max": {"outputs": {"a": {"rel": 2e-6, "finite": True}, "b": {"rel": 0.0}}},
    }
    assert worst(parity) == 3e-6
    assert worst({}) == 0.0


@pytest.mark.parametrize("bad", [{"rel": NAN}, {"rel": INF}, {"rel": NAN, "finite": True}])
def test_worst_is_inf_for_a_nan_or_inf_figure_in_any_position(bad):
    """max() with NaN depends on the order (max(nan, 1) is nan, max(1, nan) is 1): every order
    of a non-finite figure among finite ones must give inf."""
    figures = [{"rel": 1e-6}, {"rel": 2e-5}, {"rel": 0.0}, bad]
    for order in itertools.permutations(figures):
        parity = {
            "min": {"outputs": {"a": order[0], "b": order[1]}},
            "max": {"outputs": {"a": order[2], "b": order[3]}},
        }
        assert worst(parity) == INF, order


@pytest.mark.parametrize(
    "flag", [{"finite": False}, {"reference_finite": False}, {"shape_mismatch": True}]
)
def test_worst_is_inf_for_a_failed_flag_even_with_a_small_rel(flag):
    parity = {
        "min": {"outputs": {"a": {"rel": 1e-6}}},
        "max": {"outputs": {"a": {"rel": 0.0, **flag}}},
    }
    assert worst(parity) == INF


# ---- strict pairing of outputs ----------------------------------------------------------------


def test_pair_outputs_is_strict():
    a, b = torch.zeros(1), torch.ones(1)
    assert pair_outputs(["x", "y"], (a, b), "r") == {"x": a, "y": b}
    assert pair_outputs(["x"], [a], "r") == {"x": a}
    with pytest.raises(ArtifactError, match=r"r returned 2 output\(s\), expected 1: \['x'\]"):
        pair_outputs(["x"], (a, b), "r")
    with pytest.raises(ArtifactError, match=r"returned 1 output\(s\), expected 2: \['x', 'y'\]"):
        pair_outputs(["x", "y"], (a,), "r")
    with pytest.raises(ArtifactError, match=r"returned a Tensor, expected a tuple of 1"):
        pair_outputs(["x"], a, "r")  # iterating it would silently take a[0]


def test_named_module_refuses_a_different_number_of_outputs(tmp_path):
    builder = make("eager", tmp_path)
    eager = builder.forward_module()
    inputs = builder.example_inputs("min")
    good = NamedModule(eager, builder.specs(), ["image"])
    assert set(good(inputs)) == {"image"}
    two = NamedModule(lambda *a: (*eager(*a), *eager(*a)), builder.specs(), ["image"])
    with pytest.raises(MLPlatformError, match=r"returned 2 output\(s\), expected 1: \['image'\]"):
        two(inputs)
    with pytest.raises(MLPlatformError, match=r"returned 1 output\(s\), expected 2"):
        NamedModule(eager, builder.specs(), ["image", "extra"])(inputs)


def test_compiled_module_whose_outputs_do_not_match_its_manifest(tmp_path):
    result = make("eager", tmp_path)()
    inputs = result.example_inputs("min")
    image = result.module(inputs)["image"]
    for runner, got in [
        (lambda *a: (image, image), r"returned 2 output\(s\), expected 1: \['image'\]"),
        (lambda *a: (), r"returned 0 output\(s\), expected 1: \['image'\]"),
        (lambda *a: image, r"returned a Tensor, expected a tuple of 1 output\(s\) \['image'\]"),
    ]:
        module = CompiledModule(runner, result.manifest, "cpu", result.artifact_dir)
        with pytest.raises(ArtifactError, match="does not match its manifest") as info:
            module(inputs)
        assert info.match(got) and str(result.artifact_dir) in str(info.value)


# ---- through a build: what the check refuses is never saved -----------------------------------


class ExtraOutput(Backend):
    name = "extra_output"

    def compile(self, request):
        return lambda *inputs: (*request.module(*inputs), torch.zeros(1))


class NoOutputs(Backend):
    name = "no_outputs"

    def compile(self, request):
        return lambda *inputs: ()


@pytest.mark.parametrize(
    ("backend", "got"), [(ExtraOutput(), "returned 2 output"), (NoOutputs(), "returned 0 output")]
)
def test_build_refuses_a_runner_with_another_number_of_outputs(backend, got, tmp_path):
    with pytest.raises(ArtifactError, match=f"{backend.name} runner at min") as info:
        make(backend, tmp_path)()
    assert info.match(got) and info.match(r"expected 1: \['image'\]")
    assert "the artifact was not saved" in str(info.value)
    assert_nothing_saved(tmp_path)


class OneNaN(Backend):
    """The eager output with a single NaN: everything else matches exactly."""

    name = "one_nan"

    def compile(self, request):
        def run(*inputs):
            (image,) = request.module(*inputs)
            image = image.clone()
            image[tuple(size // 2 for size in image.shape)] = NAN
            return (image,)

        return run


def test_build_refuses_a_single_nan_in_the_compiled_output(tmp_path):
    with pytest.raises(ArtifactError, match="differs from eager by inf") as info:
        make(OneNaN(), tmp_path)()
    assert info.match("not saved")
    assert_nothing_saved(tmp_path)


class NaNReference(Backend):
    """A clean copy of the model as the runner, then a NaN in the eager model's weights: the
    reference (eager) output is non-finite while the candidate is fine."""

    name = "nan_reference"

    def compile(self, request):
        runner = copy.deepcopy(request.module)
        with torch.no_grad():
            weight = next(request.module.parameters())
            weight[(0,) * weight.dim()] = NAN
        return runner


def test_build_refuses_a_non_finite_reference(tmp_path):
    with pytest.raises(ArtifactError, match="differs from eager by inf"):
        make(NaNReference(), tmp_path)()
    assert_nothing_saved(tmp_path)


def test_check_parity_flags_a_non_finite_reference(tmp_path):
    builder = make("eager", tmp_path)
    eager = builder.forward_module()
    sets = verification_sets(builder.specs())

    def nan_reference(*inputs):
        (image,) = eager(*inputs)
        image = image.clone()
        image[tuple(size - 1 for size in image.shape)] = NAN
        return (image,)

    figures = check_parity(builder, eager, nan_reference, sets)
    assert set(figures) == {s.label for s in sets}
    for shape in figures.values():
        image = shape["outputs"]["image"]
        assert (
            image["rel"] == INF and image["reference_finite"] is False and image["finite"] is True
        )
    assert worst(figures) == INF


class Perturbed(Backend):
    """Adds delta * max|eager| to every element: the relative error is delta by construction."""

    name = "perturbed"

    def __init__(self, delta: float):
        super().__init__()
        self.delta = delta  # not an option: options are checked against the backend's schema

    def compile(self, request):
        delta = self.delta
        return lambda *inputs: tuple(o + delta * o.abs().max() for o in request.module(*inputs))


def test_recorded_parity_figures_are_the_measured_error(tmp_path):
    delta = 3e-5
    result = make(Perturbed(delta), tmp_path)()
    parity = result.manifest["parity"]
    assert {"min", "max", "non_square", "example"} <= set(parity)
    for label, shape in parity.items():
        image = shape["outputs"]["image"]
        assert image["rel"] == pytest.approx(delta, rel=1e-2), label
        assert image["finite"] is True and image["reference_finite"] is True
    assert result.manifest["max_relative_error"] == pytest.approx(delta, rel=1e-2)
    # above the tolerance, the same measure refuses the build (force: delta is not in the key)
    with pytest.raises(ArtifactError, match="differs from eager by 0.0009"):
        make(Perturbed(30 * delta), tmp_path, force=True)()
