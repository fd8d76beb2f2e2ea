"""mlplatform-compile: turn diffusers / transformers / ESRGAN models into compiled, cached,
verified and reloadable modules (DinoML-style builders; AOTInductor, torch.compile, AITemplate).

Python API (all names below are importable from `mlplatform_compile`)::

    from mlplatform_compile import build, load_module, eager_model

    result = build(
        "vae_decode",                  # builder: vae_decode, vae_encode, unet, clip_text, t5_encoder, esrgan
        "aot_inductor",                # backend: auto, eager, inductor, aot_inductor, onnxruntime,
                                       #   openvino, tensorrt, aitemplate
        hf_hub="builtin:sd15_vae",     # hub id, local dir, or builtin:NAME (shipped config) ...
        random_weights=True,           # ... which must be asked for explicitly
        model_kwargs={"subfolder": None},
        build_kwargs={"batch_size": [1, 2], "resolution": [256, 512],   # ints or [min, max]; pixels
                      "profiles": [{"batch_size": 1, "resolution": 512}]},  # extra static packages
        dtype="float32", device="auto",
        backend_options={"freezing": True},
        cache_dir=None, force=False,   # cache: $MLPLATFORM_COMPILE_CACHE or ~/.cache/mlplatform/compile
        verify=True, tolerance=None, benchmark_runs=3,
        benchmark_shape={"batch": 1, "height": 64, "width": 64},  # timing / auto's race; {}: typical
    )
    result.artifact_dir      # Path: <cache>/<readable name>.<backend>-<hash>/ (manifest.json, model.pt2)
    result.cached            # True when an existing valid artifact was reused (no recompile)
    result.manifest          # dict: source, config, ranges, versions, checksums, parity, latency
    result.parity, result.latency, result.random_weights
    result.module(latent=x)  # CompiledModule: named inputs -> {output name: tensor}; inputs checked
    result.eager_module(latent=x)   # the same interface around the eager model (reference)
    result.example_inputs("max")    # {"latent": tensor}; shapes: min, max, non_square, example, {dim: size}

    module = load_module(result.artifact_dir)   # later / another process; verifies checksums,
    module(latent=x)                            # torch version and device before anything runs

    builder, model = eager_model("unet", "sd15_unet")   # eager nn.Module from a shipped config,
    builder.forward_module()                            # random weights; positional wrapper
    builder.example_inputs("example")

Shipped configs (`builtin:NAME`): sd15_vae, sd15_unet, sd15_clip_text (real SD 1.5 architectures)
and tiny_vae, tiny_unet, tiny_clip_text, tiny_t5, tiny_esrgan (for tests and the default build).
A build from random weights says so in its name (`.random_weights`), manifest and printed output.

Extending: subclass `Build` (set model_name, model_type, model_forward, model_output_names,
map_function / map_function_skip_keys, instantiate / from_pretrained / input_specs, and
`config_schema`, a BuilderConfig subclass) or `Backend` (compile / load, `config_schema`: a
BackendConfig subclass) and register it from your plugin's `register_builders` /
`register_compile_backends` hook, its schema with `registry.add_config_schema(...)` from
`register_config_groups`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import build, builder_class, eager_model  # noqa: E402
from .backends.base import Backend, CompileRequest  # noqa: E402
from .build import Build  # noqa: E402
from .loader import CompiledModule, InputError, load_module  # noqa: E402
from .modules import BuildResult  # noqa: E402
from .parity import tolerance_for  # noqa: E402
from .schemas import BackendConfig, BuilderConfig, BuildJobConfig  # noqa: E402
from .specs import Dim, InputSpec  # noqa: E402

__all__ = [
    "build",
    "builder_class",
    "eager_model",
    "load_module",
    "Build",
    "BuildResult",
    "Backend",
    "BackendConfig",
    "BuilderConfig",
    "BuildJobConfig",
    "CompileRequest",
    "CompiledModule",
    "InputError",
    "Dim",
    "InputSpec",
    "tolerance_for",
    "__version__",
]
