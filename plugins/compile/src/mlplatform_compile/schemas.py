"""Typed schemas of the compile plugin's config groups (job/build, builder/*, backend/*).

Hydra checks every option against these before a build starts, and the Python API (`build(...)`,
`Backend(**options)`) validates its keyword options against the same classes, so both accept
exactly the same values. Ranges are `int` or `[min, max]`: OmegaConf 2.3 has no union types, so
those fields are `Any` and `specs.as_range` checks them with an error naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # noqa: UP035 - OmegaConf reads typing annotations

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
    # which packages may be replaced by a faster runner at their benchmark shape: profiles (a
    # profile runs on the fastest of its package, the ranged fallback and eager; the ranged
    # fallback runs eager at its benchmark shape if it lost there), all (the whole ranged
    # fallback by eager), never
    route_to_eager: str = "profiles"
    # the shape latency and backend=auto's race are timed at, {dim: size} in the model's input
    # dims (e.g. {batch: 1, height: 64, width: 64} latents); {}: batch at its minimum, every other
    # dim at the middle of its range. A profile is timed at this shape when it holds it, else at
    # its own middle
    benchmark_shape: Dict[str, int] = field(default_factory=dict)  # noqa: UP006


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
class ImageProfile:
    """One shape profile: a compiled package for static sizes or a narrow range (TensorRT's
    optimization profiles). A field left null takes the build's own range."""

    # a short name for the manifest and repr; empty: derived from the sizes (b1_h512_w512)
    name: str = ""
    batch_size: Any = None
    # pixels, int or [min, max]; sets height and width unless they are given
    resolution: Any = None
    height: Any = None
    width: Any = None


@dataclass
class TextProfile:
    """One shape profile of a text encoder (see ImageProfile)."""

    name: str = ""
    batch_size: Any = None
    sequence_length: Any = None


@dataclass
class ImageBuildKwargs:
    # int or [min, max]
    batch_size: Any = _pair(1, 2)
    # pixels, int or [min, max]; height and width share the range unless set below
    resolution: Any = _pair(64, 128)
    # pixels, int or [min, max]: separate ranges for height and width (null: resolution)
    height: Any = None
    width: Any = None
    # extra compiled packages for common shapes, tried before the ranged build (the fallback)
    profiles: List[ImageProfile] = field(default_factory=list)  # noqa: UP006


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
    # extra compiled packages for common shapes, tried before the ranged build (the fallback)
    profiles: List[TextProfile] = field(default_factory=list)  # noqa: UP006


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
    # fold weights into the graph as constants (prepacked oneDNN kernels on CPU): inference only
    freezing: bool = True


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
class OnnxRuntimeConfig(BackendConfig):
    # ONNX Runtime graph optimisations: disable, basic, extended, all
    graph_optimization: str = "all"
    # threads for one operator; 0: ONNX Runtime's default (one per physical core)
    intra_op_threads: int = 0
    # onnxscript's graph optimiser at export
    optimize: bool = True
    # ONNX Runtime's CPU memory arena (off: less resident memory)
    cpu_mem_arena: bool = False
    # let ONNX Runtime's threads spin after a call (faster alone, slows torch running beside it)
    allow_spinning: bool = False


@dataclass
class OpenVINOConfig(BackendConfig):
    # OpenVINO's CPU plugin hint: LATENCY (one request at a time) or THROUGHPUT
    performance_hint: str = "LATENCY"
    # inference threads; 0: OpenVINO's default
    num_threads: int = 0


@dataclass
class TensorRTConfig(BackendConfig):
    # TensorRT precisions allowed besides the build dtype: fp16 speeds up float32 builds on GPUs
    enabled_precisions: List[str] = field(default_factory=list)  # noqa: UP006
    # TensorRT's builder optimisation level, 0-5 (higher: slower build, faster engine)
    optimization_level: int = 3
    # GPU memory TensorRT may use while building, in MiB; 0: its default
    workspace_mb: int = 0


@dataclass
class AutoConfig(BackendConfig):
    # backends raced at build (eager always takes part); unavailable ones are skipped and recorded
    candidates: List[str] = field(  # noqa: UP006
        default_factory=lambda: ["aot_inductor", "onnxruntime", "openvino", "tensorrt"]
    )
    # options per candidate, e.g. {aot_inductor: {freezing: false}}
    candidate_options: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006
    # keep the losers' packages in the artifact (_race/NAME/), e.g. to benchmark them side by side
    keep_candidates: bool = False
    # timed rounds of the race (interleaved, median); when the two fastest are within
    # race_margin of each other, up to as many rounds again decide between them (noisy machines)
    race_runs: int = 5
    race_margin: float = 0.03


@dataclass
class AITemplateConfig(BackendConfig):
    use_fp16_acc: bool = True
    channels_last_io: bool = True

