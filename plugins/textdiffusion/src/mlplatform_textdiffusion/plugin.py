"""Hook implementations: what the text-diffusion plugin adds to mlplatform (registrations only)."""

from __future__ import annotations

from mlplatform.api import hookimpl

from .connectors import CONNECTORS, make_connector
from .eps_models import EPS_MODELS
from .job import run_sample_job, run_text_diffusion_task, run_trainer
from .models import DDPM, VAE, VAE_DDPM
from .samplers import SAMPLERS
from .schedules import SCHEDULES
from .schemas import SampleJobConfig, TextDiffusionTaskConfig, TextDiffusionTrainerConfig


@hookimpl
def register_trainers(registry):
    registry.add("trainer", "text_diffusion", run_trainer,
                 description="sentence VAE + latent DDPM prior (DMLP/EDDPM), on accelerate")


@hookimpl
def register_jobs(registry):
    registry.add_job("sample", run_sample_job, "sample, reconstruct or interpolate sentences with a text-diffusion model")


@hookimpl
def register_model_managers(registry):
    registry.add("task", "text_diffusion", run_text_diffusion_task,
                 description="sample, reconstruct or interpolate sentences with an exported text-diffusion model")


@hookimpl
def register_text_diffusion_components(registry):
    for name, spec in CONNECTORS.items():
        kind = "vae_encoder" if spec.role == "encoder" else "vae_decoder"
        registry.add(kind, name, make_connector(name), description=spec.description)
    for kind, cls in (("vae", VAE), ("ddpm", DDPM), ("vae_ddpm", VAE_DDPM)):
        registry.add(kind, cls.__name__, cls, description=(cls.__doc__ or "").strip().splitlines()[0])
    for name, cls in EPS_MODELS.items():
        registry.add("eps_model", name, cls, description=(cls.__doc__ or "").strip().splitlines()[0])
    for name, fn in SCHEDULES.items():
        registry.add("noise_schedule", name, fn, description=(fn.__doc__ or "").strip().splitlines()[0])
    for name, fn in SAMPLERS.items():
        registry.add("sampler", name, fn, description=(fn.__doc__ or "").strip().splitlines()[0])


@hookimpl
def register_config_groups(registry):
    registry.add_config_package("mlplatform_textdiffusion.conf")
    registry.add_config_schema("trainer", "text_diffusion", TextDiffusionTrainerConfig)
    registry.add_config_schema("job", "sample", SampleJobConfig)
    registry.add_config_schema("task", "text_diffusion", TextDiffusionTaskConfig)
