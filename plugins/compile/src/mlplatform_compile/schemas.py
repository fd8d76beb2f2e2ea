"""Typed schemas of the compile plugin's config groups (job/build, builder/*, backend/*).

Hydra checks every option against these before a build starts, and the Python API (`build(...)`,
`Backend(**options)`) validates its keyword options against the same classes, so both accept
exactly the same values. Ranges are `int` or `[min, max]`: OmegaConf 2.3 has no union types, so
those fields are `Any` and `specs.as_range` checks them with an error naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional  # noqa: UP035 - OmegaConf reads typing annotations

from mlplatform.api import ComponentConfig, JobConfig

# ---- job=build ----------------------------------------------------------------------------


@dataclass
class BuildJobConfig(JobConfig):
    # rebuild even when a valid artifact with the same key exists
    force: bool = False
    # where artifacts live; null: $MLPLATFORM_COMPILE_CACHE or ~/.cache/mlplatform/compile
    cache_dir: Optional[str] = None  # noqa: UP045
    # compare compiled vs eager at min, max, non-square and example shapes before saving
    verify: bool = True
    # relative error allowed; null: per dtype (float32 1e-4, float16 5e-3, bfloat16 3e-2)
    tolerance: Optional[float] = None  # noqa: UP045
    # timed runs (median) for the eager-vs-compiled latency; 0 skips timing
    benchmark_runs: int = 3


# ---- builders -----------------------------------------------------------------------------


@dataclass
class ModelKwargs:
    # a folder of the repo / directory holding the model (e.g. vae, unet, text_encoder)
    subfolder: Optional[str] = None  # noqa: UP045
    # a hub branch, tag or commit
    revision: Optional[str] = None  # noqa: UP045


@dataclass
class WeightsFileModelKwargs(ModelKwargs):
    # the weights file inside a directory or hub repo (e.g. RealESRGAN_x4plus.pth)
    filename: Optional[str] = None  # noqa: UP045


def _pair(low: int, high: int):
    return field(default_factory=lambda: [low, high])


@dataclass
class ImageBuildKwargs:
    # int or [min, max]
    batch_size: Any = _pair(1, 2)
    # pixels, int or [min, max]; height and width share the range
    resolution: Any = _pair(64, 128)


@dataclass
class UpscalerBuildKwargs(ImageBuildKwargs):
    resolution: Any = _pair(64, 256)


@dataclass
class UNetBuildKwargs(ImageBuildKwargs):
    resolution: Any = _pair(512, 768)
    # tokens of the text conditioning, int or [min, max]
    sequence_length: Any = 77
    # pixels per latent: resolution / vae_scale_factor is what the UNet sees (8 for SD)
    vae_scale_factor: int = 8


@dataclass
class TextBuildKwargs:
    batch_size: Any = _pair(1, 2)
    # tokens, int or [min, max]
    sequence_length: Any = 77


@dataclass
class T5BuildKwargs(TextBuildKwargs):
    sequence_length: Any = _pair(16, 512)


@dataclass
class BuilderConfig(ComponentConfig):
    # a hub repo id, a local directory, or builtin:NAME (a shipped config: needs random_weights)
    hf_hub: str = "???"
    # build from the config with random weights: only when asked, and labelled in every output
    random_weights: bool = False
    # the readable label in the artifact name; empty: the source's name (builtin:tiny_vae -> tiny_vae)
    label: str = ""
    model_kwargs: ModelKwargs = field(default_factory=ModelKwargs)
    build_kwargs: ImageBuildKwargs = field(default_factory=ImageBuildKwargs)


@dataclass
class UNetBuilderConfig(BuilderConfig):
    build_kwargs: UNetBuildKwargs = field(default_factory=UNetBuildKwargs)


@dataclass
class TextEncoderBuilderConfig(BuilderConfig):
    build_kwargs: TextBuildKwargs = field(default_factory=TextBuildKwargs)


@dataclass
class T5EncoderBuilderConfig(BuilderConfig):
    build_kwargs: T5BuildKwargs = field(default_factory=T5BuildKwargs)


@dataclass
class ESRGANBuilderConfig(BuilderConfig):
    model_kwargs: WeightsFileModelKwargs = field(default_factory=WeightsFileModelKwargs)
    build_kwargs: UpscalerBuildKwargs = field(default_factory=UpscalerBuildKwargs)


# ---- backends -----------------------------------------------------------------------------


@dataclass
class BackendConfig(ComponentConfig):
    """A backend with no options (eager)."""


@dataclass
class InductorConfig(BackendConfig):
    # torch.compile mode: null/default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs
    mode: Optional[str] = None  # noqa: UP045
    fullgraph: bool = False


@dataclass
class AOTInductorConfig(BackendConfig):
    # fold weights into the graph: faster on CPU (see docs/compile.md)
    freezing: bool = True
    max_autotune: bool = False
    # extra torch._inductor config entries, e.g. {cpp.threads: 4}
    inductor_configs: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006
    # EXPERIMENTAL Winograd F(4x4,3x3) for 3x3 convolutions: false, auto (timed per layer) or true
    winograd: str = "false"


@dataclass
class AITemplateConfig(BackendConfig):
    use_fp16_acc: bool = True
    channels_last_io: bool = True

