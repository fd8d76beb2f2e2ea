"""The real CLI in subprocesses: train on a synthetic grammar, sample / reconstruct /
interpolate, a throw-away plugin's eps-model, and every bad input with exit 2."""

from __future__ import annotations

import json

import pytest
from mlplatform_textdiffusion.testing import is_grammatical

from mlplatform.api import verify_artifact
from mlplatform.testing import make_distribution
from mlplatform.testing import run_cli as _run_cli

pytestmark = pytest.mark.slow  # trains tiny models through the CLI (about 1.5 minutes in all)

STEPS = 300
# load only this plugin (and a test's own): the other plugins are not what these tests are about
ONLY_US = {"MLPLATFORM_LOAD_PLUGINS": "textdiffusion"}


def run_cli(*args, env=None, **kwargs):
    return _run_cli(*args, env={**ONLY_US, **(env or {})}, **kwargs)


def train_args(tiny_models, corpus, *extra):
    bert, gpt2 = tiny_models
    return [
        "job=train", "trainer=text_diffusion", f"trainer.corpus={corpus}",
        f"trainer.vae.encoder.source={bert}", f"trainer.vae.decoder.source={gpt2}",
        # [CLS]+mean pooling and a fixed posterior variance with a KL weight keep the latents
        # compact and used by the decoder, so random N(0, I) latents decode worse than the prior's
        "trainer.vae.encoder.connector=BertForLatentConnectorNew", "trainer.vae.posterior_logvar=-4.0",
        "trainer.vae.latent_size=16", "trainer.vae.max_length=16", "trainer.vae.kl_weight=0.1",
        "trainer.vae.kl_anneal_steps=100", "trainer.lr=0.003",
        "trainer.diffusion.n_T=200", "trainer.diffusion.hidden_dim=64", "trainer.diffusion.num_layers=2",
        "trainer.diffusion.prediction=v", "trainer.diffusion.train_on=mu",
        "trainer.log_every=25", "trainer.progress=false", *extra,
    ]


def ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def bad(result, *phrases):
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture(scope="module")
def trained(tiny_models, grammar_corpus, tmp_path_factory):
    """One joint training run through the CLI, shared by the tests below."""
    cwd = tmp_path_factory.mktemp("train")
    ok(run_cli(*train_args(tiny_models, grammar_corpus, f"trainer.steps={STEPS}", "trainer.checkpoint_every=150",
                           "hydra.run.dir=run"), cwd=cwd))
    return cwd / "run"


def test_training_learns_and_writes_its_outputs(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    history = metrics["history"]
    chance = metrics["chance_token_accuracy"]
    accuracy = [h["rec_token_accuracy"] for h in history]
    assert accuracy[-1] > 8 * chance, (accuracy, chance)  # far above chance (1/20)
    assert accuracy[-1] > accuracy[0] + 0.1
    weights = [h["kl_weight"] for h in history]  # KL annealing: linear warm-up over 100 steps to 0.1
    assert weights[0] < 0.03 and weights[-1] == pytest.approx(0.1) and weights == sorted(weights)
    ddpm = [h["ddpm_loss"] for h in history]
    assert sum(ddpm[-3:]) / 3 < sum(ddpm[:2]) / 2, ddpm  # the DDPM loss falls
    assert 0 <= metrics["final"]["reconstruction_bleu"] <= 100, metrics["final"]  # sacrebleu, reported
    assert (trained / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = verify_artifact(trained / "model")
    assert manifest["step"] == STEPS
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == ["step_0000150", "step_0000300"]


def test_sample_writes_grammatical_sentences(trained, tmp_path):
    ok(run_cli("job=sample", f"job.model={trained / 'model'}", "job.num_samples=16", "job.steps=50",
               "job.save_latents=true", "hydra.run.dir=out", cwd=tmp_path))
    sentences = (tmp_path / "out" / "sentences.txt").read_text().splitlines()
    assert len(sentences) == 16
    grammatical = sum(map(is_grammatical, sentences))
    assert grammatical >= 10, sentences
    # well above what the same decoder makes of unconditioned N(0, I) latents (no prior)
    import torch
    from mlplatform_textdiffusion import TextDiffusionPipeline

    pipe = TextDiffusionPipeline.from_pretrained(trained / "model", device="cpu")
    z = torch.randn(64, pipe.latent_size, generator=torch.Generator().manual_seed(0))
    random_rate = sum(map(is_grammatical, pipe.decode(z))) / 64
    print(f"grammatical: sampled {grammatical / 16:.3f}, random latents {random_rate:.3f}")
    assert grammatical / 16 >= random_rate + 0.25, (grammatical, random_rate)
    summary = json.loads((tmp_path / "out" / "samples.json").read_text())
    assert summary["used_ema"] and summary["sampler"] == "ddim"
    from safetensors.torch import load_file

    assert load_file(tmp_path / "out" / "latents.safetensors")["latents"].shape == (16, 16)


def test_sample_with_ddpm_and_top_p_in_bfloat16(trained, tmp_path):
    ok(run_cli("job=sample", f"job.model={trained / 'model'}", "job.num_samples=4", "job.sampler=ddpm",
               "job.decoding=top_p", "job.top_p=0.9", "dtype=bfloat16", "hydra.run.dir=out", cwd=tmp_path))
    assert len((tmp_path / "out" / "sentences.txt").read_text().splitlines()) == 4
    assert json.loads((tmp_path / "out" / "samples.json").read_text())["dtype"] == "bfloat16"


def test_the_exported_model_is_a_job_infer_task(trained, tmp_path):
    """task=text_diffusion of job=infer (the managers plugin's job; CI installs every plugin)."""
    pytest.importorskip("mlplatform_managers")
    env = {"MLPLATFORM_LOAD_PLUGINS": "textdiffusion,managers"}
    ok(run_cli("job=infer", "task=text_diffusion", f"task.model={trained / 'model'}", "task.num_samples=12",
               "hydra.run.dir=inf", cwd=tmp_path, env=env))
    record = json.loads((tmp_path / "inf" / "infer_result.json").read_text())
    assert record["task"] == "text_diffusion" and record["result"]["used_ema"]
    sentences = record["result"]["sentences"]
    assert len(sentences) == 12 and sum(map(is_grammatical, sentences)) >= 8, sentences
    assert (tmp_path / "inf" / "sentences.txt").read_text().splitlines() == sentences
    bad(run_cli("job=infer", "task=text_diffusion", f"task.model={trained / 'model'}", "task.mode=evaluate",
                cwd=tmp_path, env=env), "unknown task.mode 'evaluate'", "job=sample")


def test_reconstruct_and_interpolate(trained, tmp_path):
    ok(run_cli("job=sample", f"job.model={trained / 'model'}", "job.mode=reconstruct",
               "job.sentences=[the cat sees a dog,a big man likes the red bird]", "hydra.run.dir=rec", cwd=tmp_path))
    assert len((tmp_path / "rec" / "sentences.txt").read_text().splitlines()) == 2
    ok(run_cli("job=sample", f"job.model={trained / 'checkpoints' / 'step_0000300'}", "job.mode=interpolate",
               "job.sentences=[the cat sees,a dog finds the man]", "job.interpolation_steps=4",
               "hydra.run.dir=int", cwd=tmp_path))
    assert len((tmp_path / "int" / "sentences.txt").read_text().splitlines()) == 4


def test_ddpm_mode_trains_the_prior_on_frozen_latents(trained, tiny_models, grammar_corpus, tmp_path):
    from safetensors.torch import load_file

    ok(run_cli(*train_args(tiny_models, grammar_corpus, "trainer.mode=ddpm", f"trainer.init_from={trained / 'model'}",
                           "trainer.steps=20", "trainer.log_every=10", "hydra.run.dir=prior"), cwd=tmp_path))
    before = load_file(trained / "model" / "model.safetensors")
    after = load_file(tmp_path / "prior" / "model" / "model.safetensors")
    vae_keys = [k for k in before if k.startswith("model_vae.")]
    assert vae_keys and all((before[k] == after[k]).all() for k in vae_keys)
    assert any(not (before[k] == after[k]).all() for k in before if k.startswith("ddpm."))


EPS_PLUGIN = '''
import torch
from mlplatform.api import hookimpl
from mlplatform_textdiffusion import DDPM_Abs


class ScaledDDPM(DDPM_Abs):
    """A plugin's own DDPM on the abstract base: eps-prediction, its loss reported x1000 (so a
    test can see that this class trained)."""

    def __init__(self, eps_model, betas, n_T, criterion, ddpm_schedule, **options):
        super().__init__(eps_model, betas, n_T, criterion, ddpm_schedule)
        alpha_bar = torch.cumprod(1 - ddpm_schedule(betas[0], betas[1], n_T), 0).float()
        self.register_buffer("alpha_bar", alpha_bar, persistent=False)

    def forward(self, x, mu=None):
        t = torch.randint(0, self.n_T, (x.shape[0],), device=x.device)
        eps = torch.randn_like(x)
        a = self.alpha_bar[t][:, None]
        out = self.eps_model(a.sqrt() * x + (1 - a).sqrt() * eps, t)
        return 1000 * (out - eps).pow(2).mean(-1), t

    def sample(self, n_sample, size, device, fp16=False, **kwargs):
        raise NotImplementedError("training only")


class TinyEps(torch.nn.Module):
    """A plugin's own eps-model: sized by latent_dim only."""

    def __init__(self, latent_dim):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = torch.nn.Linear(latent_dim + 1, latent_dim)

    def forward(self, x, t):
        return self.net(torch.cat([x, t.float()[:, None] / 1000], dim=-1))


@hookimpl
def register_text_diffusion_components(registry):
    registry.add("eps_model", "tiny_eps", TinyEps, description="a throw-away plugin's eps-model")
    registry.add("ddpm", "scaled_ddpm", ScaledDDPM, description="a throw-away plugin's DDPM")
'''


def test_a_plugin_adds_an_eps_model_and_a_ddpm_subclass_and_trains_with_them(tiny_models, grammar_corpus, tmp_path):
    site = make_distribution(tmp_path / "site", "tiny-eps", {"tiny_eps_plugin": EPS_PLUGIN},
                             {"tiny_eps": "tiny_eps_plugin"})
    result = ok(run_cli(*train_args(tiny_models, grammar_corpus, "trainer.diffusion.eps_model=tiny_eps",
                                    "trainer.diffusion.ddpm_class=scaled_ddpm",
                                    "trainer.steps=4", "trainer.log_every=2", "dtype=bfloat16",  # bf16 autocast on CPU too
                                    "hydra.run.dir=run"),
                        cwd=tmp_path, extra_path=[site],
                        env={"MLPLATFORM_STRICT_PLUGINS": "1", "MLPLATFORM_LOAD_PLUGINS": "textdiffusion,tiny_eps"}))
    assert "trained text_diffusion (joint) for 4 steps" in result.stdout
    assert verify_artifact(tmp_path / "run" / "model")
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert all(h["ddpm_loss"] > 50 for h in history), history  # ScaledDDPM's x1000 loss: its class trained


# --- bad input: exit 2 with a clear message ---------------------------------------------------


def test_empty_corpus(tiny_models, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    bad(run_cli(*train_args(tiny_models, tmp_path / "empty.txt", "trainer.steps=2"), cwd=tmp_path),
        "holds no sentences")


def test_unknown_connector_names_the_closest_match(tiny_models, grammar_corpus, tmp_path):
    result = bad(run_cli(*train_args(tiny_models, grammar_corpus, "trainer.steps=2",
                                     "trainer.vae.encoder.connector=BertForLatentConector"), cwd=tmp_path))
    assert "BertForLatentConnector" in result.stderr and "BertForLatentConector" in result.stderr


def test_latent_size_mismatch_between_vae_and_ddpm(trained, tiny_models, grammar_corpus, tmp_path):
    bad(run_cli(*train_args(tiny_models, grammar_corpus, "trainer.steps=2", "trainer.diffusion.latent_dim=7"),
                cwd=tmp_path), "latent-size mismatch", "16", "7")
    bad(run_cli(*train_args(tiny_models, grammar_corpus, "trainer.steps=2", "trainer.mode=ddpm",
                            f"trainer.init_from={trained / 'model'}", "trainer.diffusion.latent_dim=32"),
                cwd=tmp_path), "latent-size mismatch", f"{trained / 'model'}")


def test_checkpoint_from_another_configuration(trained, tiny_models, grammar_corpus, tmp_path):
    ckpt = trained / "checkpoints" / "step_0000150"
    bad(run_cli(*train_args(tiny_models, grammar_corpus, f"trainer.steps={STEPS}", "trainer.lr=0.001",
                            f"trainer.resume={ckpt}"), cwd=tmp_path),
        "another configuration", "lr")


def test_sample_count_of_zero_or_less(trained, tmp_path):
    for count in ("0", "-2"):
        bad(run_cli("job=sample", f"job.model={trained / 'model'}", f"job.num_samples={count}", cwd=tmp_path),
            "job.num_samples must be >= 1")


def test_sentences_longer_than_the_maximum_refused_or_truncated(trained, tmp_path):
    long = " ".join(["the big cat sees a small dog"] * 4)  # 28 words > max_length 16
    args = ["job=sample", f"job.model={trained / 'model'}", "job.mode=reconstruct", f"job.sentences=[{long}]"]
    bad(run_cli(*args, "job.too_long=refuse", cwd=tmp_path), "exceed max_length=16")
    result = ok(run_cli(*args, "hydra.run.dir=out", cwd=tmp_path))
    assert "longer than max_length=16 tokens are truncated" in result.stderr + result.stdout
    assert len((tmp_path / "out" / "sentences.txt").read_text().splitlines()) == 1
