"""mlplatform-textdiffusion: DMLP's sentence VAE with a latent DDPM prior, done right.

Public API (no Hydra needed):
- models:     VAE_Abs, DDPM_Abs, VAE_DDPM_Abs (subclass these); VAE, DDPM, VAE_DDPM
- eps-models: MLPSkipNet, TransformerNet, LinearModel, ResidualLinear, build_eps_model
- schedules:  linear_schedule, cosine_schedule, dmlp_schedule, ScheduleTensors
- samplers:   ddpm_sample, ddim_sample, ddim_invert
- connectors: LatentEncoder, GPT2LatentDecoder, CONNECTORS (DMLP's MODEL_CLASS names), make_connector
- data:       load_corpus, TextCodec
- training:   train, TrainResult; using: TextDiffusionPipeline, Decoding
- artifacts:  build_model, save_artifact, load_artifact
"""

from .abstract import DDPM_Abs, VAE_Abs, VAE_DDPM_Abs
from .build import build_model, load_artifact, save_artifact
from .connectors import CONNECTORS, GPT2LatentDecoder, LatentEncoder, make_connector
from .data import TextCodec, load_corpus
from .eps_models import LinearModel, MLPSkipNet, ResidualLinear, TransformerNet, build_eps_model
from .models import DDPM, VAE, VAE_DDPM
from .pipeline import Decoding, TextDiffusionPipeline
from .samplers import ddim_invert, ddim_sample, ddpm_sample
from .schedules import ScheduleTensors, cosine_schedule, dmlp_schedule, linear_schedule
from .schemas import SampleJobConfig, TextDiffusionTrainerConfig
from .train import TrainResult, train

MODEL_CLASS = {name: make_connector(name) for name in CONNECTORS}

__all__ = [
    "VAE_Abs", "DDPM_Abs", "VAE_DDPM_Abs", "VAE", "DDPM", "VAE_DDPM",
    "MLPSkipNet", "TransformerNet", "LinearModel", "ResidualLinear", "build_eps_model",
    "linear_schedule", "cosine_schedule", "dmlp_schedule", "ScheduleTensors",
    "ddpm_sample", "ddim_sample", "ddim_invert",
    "LatentEncoder", "GPT2LatentDecoder", "CONNECTORS", "MODEL_CLASS", "make_connector",
    "load_corpus", "TextCodec", "train", "TrainResult", "TextDiffusionPipeline", "Decoding",
    "build_model", "save_artifact", "load_artifact", "TextDiffusionTrainerConfig", "SampleJobConfig",
]
