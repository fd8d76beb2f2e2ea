"""Schedules, prediction types, samplers and eps-models: exact checks, no training."""

from __future__ import annotations

import pytest
import torch
from mlplatform_textdiffusion import (
    DDPM,
    LinearModel,
    MLPSkipNet,
    ResidualLinear,
    ScheduleTensors,
    TransformerNet,
    build_eps_model,
    cosine_schedule,
    ddim_invert,
    ddim_sample,
    ddpm_sample,
    dmlp_schedule,
    linear_schedule,
)

from mlplatform.api import ConfigError, get_registry

# --- schedules -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "cosine", "dmlp"])
def test_schedule_invariants(name):
    betas = get_registry().get("noise_schedule", name)(1e-4, 0.02, 1000)
    sched = ScheduleTensors.from_betas(betas)
    assert betas.shape == (1000,) and betas.dtype == torch.float64
    assert bool(((betas > 0) & (betas < 1)).all())
    ab = sched.alphas_cumprod
    assert bool((ab[1:] < ab[:-1]).all()), "alpha_bar must fall strictly"
    assert ab[0] > 0.99 and ab[-1] < 1e-3, "almost clean at the start, almost pure noise at the end"
    assert torch.allclose(ab, torch.cumprod(1 - betas, 0))


def test_linear_honours_beta1_and_beta2():
    betas = linear_schedule(3e-4, 0.05, 11)
    assert betas[0].item() == pytest.approx(3e-4) and betas[-1].item() == pytest.approx(0.05)
    assert torch.allclose(betas.diff(), torch.full((10,), (0.05 - 3e-4) / 10, dtype=torch.float64))


def test_dmlp_preset_is_the_constant_0008():
    assert bool((dmlp_schedule(1e-4, 0.02, 500) == 0.008).all())


def test_cosine_follows_the_squared_cosine():
    n = 1000
    ab = ScheduleTensors.from_betas(cosine_schedule(1e-8, 0.02, n)).alphas_cumprod
    t = torch.arange(1, n + 1, dtype=torch.float64) / n
    f = torch.cos((t + 0.008) / 1.008 * torch.pi / 2) ** 2 / torch.cos(torch.tensor(0.008 / 1.008 * torch.pi / 2)) ** 2
    assert torch.allclose(ab[:-50], f[:-50], rtol=1e-6)  # the clip at 0.999 only bites at the end


def test_bad_schedule_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="beta1 <= beta2"):
        linear_schedule(0.02, 0.001, 10)
    with pytest.raises(ConfigError, match="n_T"):
        cosine_schedule(1e-4, 0.02, 0)


# --- the closed-form optimal denoiser for Gaussian data ----------------------------------------

MEAN, STD = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.5])


class GaussianOptimal(torch.nn.Module):
    """For x0 ~ N(m, s^2): the exact E[target | x_t] of each prediction type."""

    def __init__(self, alphas_cumprod, prediction):
        super().__init__()
        self.ab = alphas_cumprod
        self.prediction = prediction
        self.anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))  # gives predict() a dtype
        self.latent_dim = 2

    def forward(self, x, t):
        ab = self.ab[t][:, None]
        var = ab * STD.double() ** 2 + 1 - ab
        eps = (1 - ab).sqrt() * (x - ab.sqrt() * MEAN.double()) / var
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x0
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0


def optimal_ddpm(schedule="linear", prediction="eps", n_T=1000):
    fn = {"linear": linear_schedule, "cosine": cosine_schedule, "dmlp": dmlp_schedule}[schedule]
    ab = torch.cumprod(1 - fn(1e-4, 0.02, n_T), 0)
    return DDPM(GaussianOptimal(ab, prediction), (1e-4, 0.02), n_T, None, fn, prediction=prediction)


@pytest.mark.parametrize("sampler,kwargs,schedule", [
    (ddpm_sample, {}, "linear"),
    (ddpm_sample, {}, "cosine"),
    (ddim_sample, {"steps": 200, "eta": 0.0}, "linear"),
    (ddim_sample, {"steps": 200, "eta": 0.0}, "cosine"),
    (ddpm_sample, {}, "dmlp"),
])
def test_samplers_reproduce_gaussian_data_without_training(sampler, kwargs, schedule):
    ddpm = optimal_ddpm(schedule)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(8000, 2, generator=g, dtype=torch.float64)
    x = sampler(ddpm, noise, generator=g, **kwargs)
    assert torch.allclose(x.mean(0), MEAN.double(), atol=0.06), x.mean(0)
    # the last step returns E[x0 | x_0], short of the data's variance by Var(x0 | x_0): tiny for
    # linear and cosine (beta_0 ~ 1e-4), about 3% of the std for dmlp's beta_0 = 0.008
    ab0 = ddpm.schedule.alphas_cumprod[0]
    var = STD.double() ** 2
    expected = (var - var * (1 - ab0) / (ab0 * var + 1 - ab0)).sqrt()
    assert torch.allclose(x.std(0), expected, rtol=0.03), (x.std(0), expected)


class MixtureOptimal(torch.nn.Module):
    """The exact E[eps | x_t] for x0 from a mixture of isotropic Gaussians (closed form: the
    components' posterior responsibilities weight their Gaussian denoisers)."""

    def __init__(self, alphas_cumprod, means, std, weights):
        super().__init__()
        self.ab, self.means, self.std, self.weights = alphas_cumprod, means, std, weights
        self.anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.latent_dim = means.shape[1]

    def forward(self, x, t):
        ab = self.ab[t][:, None, None]  # (batch, 1, 1) against components (1, k, dim)
        var = ab * self.std**2 + 1 - ab
        diff = x[:, None, :] - ab.sqrt() * self.means[None]
        log_r = self.weights.log()[None] - 0.5 * (diff**2 / var).sum(-1)
        r = log_r.softmax(-1)[..., None]
        return (r * (1 - ab).sqrt() * diff / var).sum(1)


def test_ddim50_matches_ddpm1000_on_a_mixture_with_the_exact_denoiser():
    """With a perfect denoiser the fast sampler must reproduce a multimodal distribution as
    well as 1000 ancestral steps do: any quality gap between them in a trained model is the
    model's, not the sampler's (its step sub-sequence, alpha_bar indexing and final step)."""
    means = torch.tensor([[3.0, 0.0], [-3.0, 2.0], [0.0, -3.0]], dtype=torch.float64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    std = 0.3
    ab = torch.cumprod(1 - linear_schedule(1e-4, 0.02, 1000), 0)
    ddpm = DDPM(MixtureOptimal(ab, means, std, weights), (1e-4, 0.02), 1000, None, linear_schedule)
    noise = torch.randn(4000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for x in (ddim_sample(ddpm, noise, steps=50), ddpm_sample(ddpm, noise, generator=torch.Generator().manual_seed(1))):
        nearest = torch.cdist(x, means).argmin(1)
        fractions = torch.bincount(nearest, minlength=3).double() / len(x)
        assert torch.allclose(fractions, weights, atol=0.03), fractions
        for k in range(3):
            members = x[nearest == k]
            assert torch.allclose(members.mean(0), means[k], atol=0.05), (k, members.mean(0))
            assert torch.allclose(members.std(0), torch.full((2,), std, dtype=torch.float64), rtol=0.12), (k, members.std(0))


def test_ddim_with_eta1_on_all_steps_is_ancestral_ddpm():
    ddpm = optimal_ddpm()
    noise = torch.randn(256, 2, dtype=torch.float64)
    a = ddpm_sample(ddpm, noise, generator=torch.Generator().manual_seed(3))
    b = ddim_sample(ddpm, noise, steps=1000, eta=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, b, atol=1e-9)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_prediction_types_agree(prediction):
    """The same optimal denoiser, parametrised as eps, x0 or v, gives the same (eps, x0)."""
    ref, other = optimal_ddpm(prediction="eps"), optimal_ddpm(prediction=prediction)
    x = torch.randn(16, 2, dtype=torch.float64)
    t = torch.randint(0, 1000, (16,))
    for a, b in zip(ref.predict(x, t), other.predict(x, t), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(ddim_sample(ref, x, steps=20), ddim_sample(other, x, steps=20), atol=1e-6)


def test_ddim_eta0_is_deterministic_and_eta1_is_not():
    ddpm = optimal_ddpm()
    noise = torch.randn(64, 2, dtype=torch.float64)
    a = ddim_sample(ddpm, noise, steps=25, eta=0.0, generator=torch.Generator().manual_seed(1))
    b = ddim_sample(ddpm, noise, steps=25, eta=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = ddim_sample(ddpm, noise, steps=25, eta=1.0, generator=torch.Generator().manual_seed(1))
    d = ddim_sample(ddpm, noise, steps=25, eta=1.0, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(c, d)


@pytest.mark.parametrize("steps,iters", [(10, 30), (50, 10)])
def test_ddim_inversion_round_trip(steps, iters):
    ddpm = optimal_ddpm()
    g = torch.Generator().manual_seed(0)
    x0 = MEAN.double() + STD.double() * torch.randn(32, 2, dtype=torch.float64, generator=g)
    noise = ddim_invert(ddpm, x0, steps=steps, fixed_point_iters=iters)
    assert torch.allclose(ddim_sample(ddpm, noise, steps=steps), x0, atol=1e-5)
    # the usual one-pass inversion is only approximate; the fixed point is what makes it exact
    rough = ddim_invert(ddpm, x0, steps=steps, fixed_point_iters=1)
    assert (ddim_sample(ddpm, rough, steps=steps) - x0).abs().max() > 1e-2


def test_ddpm_sampler_refuses_a_step_count():
    with pytest.raises(ConfigError, match="all 1000 steps"):
        ddpm_sample(optimal_ddpm(), torch.randn(2, 2), steps=50)
    with pytest.raises(ConfigError, match="steps"):
        ddim_sample(optimal_ddpm(), torch.randn(2, 2), steps=0)


def test_ddpm_sample_api_and_count_check():
    ddpm = optimal_ddpm()
    z = ddpm.sample(5, 2, "cpu", sampler=ddim_sample, steps=10)
    assert z.shape == (5, 2) and z.dtype == torch.float32
    with pytest.raises(ConfigError, match=">= 1"):
        ddpm.sample(0, 2, "cpu")


def test_ddpm_training_loss_targets():
    """forward(x, mu) is the per-sample MSE of the model's output against its target."""
    model = MLPSkipNet(4, hidden_dim=16, num_layers=2)
    for prediction in ("eps", "x0", "v"):
        ddpm = DDPM(model, (1e-4, 0.02), 100, prediction=prediction)
        loss, t = ddpm(torch.randn(6, 4), torch.randn(6, 4))
        assert loss.shape == (6,) and t.shape == (6,) and bool((loss >= 0).all())
        loss.mean().backward()


# --- eps-models -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp_skip", "transformer", "linear", "residual"])
def test_eps_models_are_sized_by_arguments(name):
    factory = get_registry().get("eps_model", name)
    small = build_eps_model(factory, 16, hidden_dim=32, num_layers=2, num_heads=2)
    large = build_eps_model(factory, 16, hidden_dim=64, num_layers=3, num_heads=2)
    x, t = torch.randn(3, 16, requires_grad=True), torch.tensor([0, 5, 999])
    out = small(x, t)
    assert out.shape == x.shape
    out.pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(large) > count(small)
    assert small.latent_dim == 16


def test_mlp_skip_net_is_not_hard_wired():
    assert sum(p.numel() for p in MLPSkipNet(8, hidden_dim=16, num_layers=2).parameters()) < 5000


def test_residual_linear_is_residual():
    """With each block's output layer zeroed, the blocks are the identity."""
    model = ResidualLinear(8, hidden_dim=16, num_layers=3)
    for block in model.blocks:
        torch.nn.init.zeros_(block.fc2.weight)
        torch.nn.init.zeros_(block.fc2.bias)
    x, t = torch.randn(4, 8), torch.tensor([1, 2, 3, 4])
    assert torch.allclose(model(x, t), model.out(model.inp(x)))


def test_transformer_net_checks_its_split():
    with pytest.raises(ConfigError, match="num_tokens"):
        TransformerNet(10, num_tokens=4)
    assert LinearModel(4, hidden_dim=8)(torch.randn(2, 4), torch.tensor([0, 1])).shape == (2, 4)
