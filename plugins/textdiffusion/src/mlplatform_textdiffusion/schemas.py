"""Typed schemas of this plugin's config groups (trainer/text_diffusion, job/sample).

The trainer's schema is also the options of the Python API (`train(options, ...)`), checked
with `from_options`, so the command line and Python accept exactly the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional  # noqa: UP035 - OmegaConf reads typing annotations

from mlplatform.api import ComponentConfig, JobConfig


@dataclass
class ConnectorConfig:
    # a DMLP MODEL_CLASS name (BertForLatentConnector, GPT2ForLatentConnector, ...)
    connector: str = "???"
    # a Hugging Face repo id or a local directory saved with save_pretrained (holding the
    # tokenizer too); hub ids honour HF_HUB_OFFLINE. Required, except in mode=ddpm, where the
    # VAE comes from init_from
    source: Optional[str] = None  # noqa: UP045
    # build from the source's config.json with random weights (labelled in every output)
    random_weights: bool = False
    # encoders: cls, mean or cls_mean (null: the connector's own)
    pooling: Optional[str] = None  # noqa: UP045
    # decoders: both, embedding or memory (null: the connector's own)
    injection: Optional[str] = None  # noqa: UP045


@dataclass
class VAEConfig:
    # a registered VAE class (kind `vae`): VAE, or a plugin's subclass of VAE_Abs
    vae_class: str = "VAE"
    encoder: ConnectorConfig = field(default_factory=lambda: ConnectorConfig(connector="BertForLatentConnector"))
    decoder: ConnectorConfig = field(default_factory=lambda: ConnectorConfig(connector="GPT2ForLatentConnector"))
    # dimensions of the sentence latent
    latent_size: int = 32
    # null: learned posterior variance; a number: the fixed posterior log-variance
    posterior_logvar: Optional[float] = None  # noqa: UP045
    # weight of the KL term once annealed (beta)
    kl_weight: float = 1.0
    # steps over which the KL weight rises linearly from 0 to kl_weight (0: no annealing)
    kl_anneal_steps: int = 0
    # free bits: nats per latent dimension below which the KL is not pushed down (0: off)
    free_bits: float = 0.0
    # most tokens per sentence
    max_length: int = 64
    # sentences longer than max_length: truncate (with a warning) or refuse
    too_long: str = "truncate"


@dataclass
class DiffusionConfig:
    # a registered DDPM class (kind `ddpm`): DDPM, or a plugin's subclass of DDPM_Abs
    ddpm_class: str = "DDPM"
    # a registered eps-model: mlp_skip, transformer, linear, residual (or a plugin's)
    eps_model: str = "mlp_skip"
    # the eps-model's latent size; null follows the VAE (a different number is an error)
    latent_dim: Optional[int] = None  # noqa: UP045
    # eps-model sizes (null: the model's defaults; a model gets only those it accepts)
    hidden_dim: Optional[int] = None  # noqa: UP045
    num_layers: Optional[int] = None  # noqa: UP045
    num_heads: Optional[int] = None  # noqa: UP045
    # a registered noise schedule: linear, cosine, dmlp (DMLP's constant beta 0.008)
    schedule: str = "linear"
    beta1: float = 0.0001
    beta2: float = 0.02
    n_T: int = 1000
    # what the eps-model predicts: eps, x0 or v
    prediction: str = "eps"
    # the clean latent the prior learns: z (posterior sample) or mu (posterior mean)
    train_on: str = "z"
    # alpha in loss = reconstruction + alpha * ddpm loss (joint mode)
    ddpm_weight: float = 1.0
    # decay of the eps-model's exponential moving average (0: no EMA)
    ema_decay: float = 0.999


@dataclass
class TextDiffusionTrainerConfig(ComponentConfig):
    """trainer=text_diffusion: train the sentence VAE and its DDPM prior."""

    # the training corpus: a text file (one sentence a line) or JSONL
    corpus: str = "???"
    # auto (by suffix: .jsonl/.json are JSONL), text or jsonl
    corpus_format: str = "auto"
    # the text field of each JSONL object
    text_key: str = "text"
    # vae (VAE only), ddpm (DDPM on the frozen latents of init_from's VAE) or joint
    mode: str = "joint"
    vae: VAEConfig = field(default_factory=VAEConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    # a registered VAE+DDPM class (kind `vae_ddpm`): VAE_DDPM, or a plugin's subclass of VAE_DDPM_Abs
    vae_ddpm_class: str = "VAE_DDPM"
    # a checkpoint or exported model to start from (its configuration must match)
    init_from: Optional[str] = None  # noqa: UP045
    # a checkpoint directory to continue from (same configuration; steps may grow)
    resume: Optional[str] = None  # noqa: UP045
    # optimizer steps in all (a resumed run counts from the checkpoint's step)
    steps: int = 1000
    batch_size: int = 32
    lr: float = 0.0001
    weight_decay: float = 0.0
    # gradient-norm clipping (0: off)
    grad_clip: float = 1.0
    # log and evaluate every N steps
    log_every: int = 50
    # write a checkpoint every N steps (0: only the last step)
    checkpoint_every: int = 0
    # where checkpoints, the exported model, metrics and the loss curve go (null: the run dir)
    output_dir: Optional[str] = None  # noqa: UP045
    # show a progress bar
    progress: bool = True


@dataclass
class SamplingOptions:
    """What job=sample and task=text_diffusion (job=infer) share: the model and how to sample."""

    # an exported model or checkpoint directory (written by trainer=text_diffusion)
    model: str = "???"
    # sample (new sentences), reconstruct (encode and decode the sentences) or interpolate
    # (between the two sentences); job=sample also has evaluate
    mode: str = "sample"
    num_samples: int = 8
    # a registered sampler: ddim or ddpm
    sampler: str = "ddim"
    # DDIM steps (null: all n_T); ddpm always runs all steps
    steps: Optional[int] = 50  # noqa: UP045
    # DDIM noise: 0 is deterministic
    eta: float = 0.0
    # greedy, top_k or top_p
    decoding: str = "greedy"
    top_k: int = 20
    top_p: float = 0.9
    temperature: float = 1.0
    max_new_tokens: int = 32
    sentences: List[str] = field(default_factory=list)  # noqa: UP006
    # points between (and including) the two sentences in interpolate mode
    interpolation_steps: int = 5
    # also save the latents (latents.safetensors)
    save_latents: bool = False
    # sample with the EMA of the eps-model when the model has one
    use_ema: bool = True
    # sentences over the model's max_length: truncate or refuse (null: the model's setting)
    too_long: Optional[str] = None  # noqa: UP045


@dataclass
class SampleJobConfig(SamplingOptions, JobConfig):
    """job=sample: sample, reconstruct, interpolate or evaluate with a trained model."""

    # mode=evaluate: the training corpus (novelty, reconstruction BLEU references)
    corpus: Optional[str] = None  # noqa: UP045
    # mode=evaluate: auto, text or jsonl, and the text field of JSONL objects
    corpus_format: str = "auto"
    text_key: str = "text"
    # mode=evaluate: sample sets (each num_samples sentences) the mean and std are taken over
    n_sets: int = 3
    # mode=evaluate: a local causal LM directory (model + tokenizer) for perplexity (null: skipped)
    judge_lm: Optional[str] = None  # noqa: UP045


@dataclass
class TextDiffusionTaskConfig(SamplingOptions, ComponentConfig):
    """task=text_diffusion (job=infer): sample, reconstruct or interpolate with an exported
    model, as job=sample does (modes sample, reconstruct, interpolate)."""

    name: str = "text_diffusion"
