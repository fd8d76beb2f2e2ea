"""compiled: modules built by `job=build` (the compile plugin), loaded through its public API
(`mlplatform_compile.load_module`, which verifies checksums, torch version and device), and
swapped into a loaded Stable Diffusion pipeline in place of an eager component, as Nataili's
AITemplate manager did. Supported swaps: `vae_decode` (the VAE decoder), `clip_text` (the text
encoder) and `unet` (the denoising UNet). The compile plugin is an optional dependency: `pip install mlplatform-managers[compile]`.

A catalog entry lists the artifact directory's files (manifest.json, and model.pt2 for
aot_inductor builds) under its name in the models dir; `config.pipeline` may name the
stable_diffusion model it was built from (a swap into another model is refused).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mlplatform.api import ArtifactError, ConfigError

from ..base import LoadRequest, TypeManager, module_bytes

log = logging.getLogger(__name__)
SWAPPABLE = ("vae_decode", "clip_text", "unet")


@dataclass
class CompiledComponent:
    """A loaded compiled module and what it replaces."""

    name: str
    module: Any  # mlplatform_compile.CompiledModule: named inputs -> {output name: tensor}
    builder: str
    pipeline: str | None  # the stable_diffusion model it was built from, when the entry says
    device: Any
    dtype: Any


def load_module_api() -> Any:
    try:
        from mlplatform_compile import load_module
    except ImportError as exc:
        raise ConfigError(
            "compiled models need the compile plugin (mlplatform-compile), which is not installed",
            "pip install 'mlplatform-managers[compile]' (or -e plugins/compile in a checkout)",
        ) from exc
    return load_module


class CompiledManager(TypeManager):
    """Artifacts of `job=build`, loaded with mlplatform_compile.load_module."""

    types = ("compiled",)
    description = "compiled modules from job=build, swapped into diffusers pipelines"

    def load_model(self, request: LoadRequest) -> Any:
        if "manifest.json" not in request.files:
            raise ArtifactError(f"model {request.entry.name!r} lists no manifest.json",
                                "list the artifact directory's files (manifest.json, model.pt2)")
        module = load_module_api()(request.root)
        builder = str(module.manifest.get("builder"))
        if builder not in SWAPPABLE:
            raise ArtifactError(
                f"model {request.entry.name!r} is a {builder!r} build; only "
                f"{', '.join(SWAPPABLE)} builds can be swapped into a pipeline",
                "build one of those with job=build builder=vae_decode (or clip_text)",
            )
        if module.device.type != request.device.type:
            raise ArtifactError(
                f"model {request.entry.name!r} was built for {module.device}, not {request.device}",
                "build it for this device, or pass device= to match it",
            )
        return CompiledComponent(name=request.entry.name, module=module, builder=builder,
                                 pipeline=request.entry.config.get("pipeline"),
                                 device=module.device, dtype=module.dtype)

    def size_bytes(self, model: Any) -> int:
        return module_bytes(getattr(model.module, "runner", None)) or sum(
            p.stat().st_size for p in model.module.artifact_dir.iterdir() if p.is_file())


def _swap_vae_decode(pipeline: Any, component: CompiledComponent) -> Any:
    from diffusers.models.autoencoders.vae import DecoderOutput

    vae, module = pipeline.vae, component.module

    def decode(z: Any, return_dict: bool = True, generator: Any = None) -> Any:
        image = module(latent=z.to(module.device, module.dtype).contiguous())["image"]
        image = image.to(z.device, z.dtype)
        return DecoderOutput(sample=image) if return_dict else (image,)

    vae.decode = decode  # an instance attribute shadows the method; deleting it restores it
    return lambda: vars(vae).pop("decode", None)


def _swap_clip_text(pipeline: Any, component: CompiledComponent) -> Any:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    encoder, module = pipeline.text_encoder, component.module

    def forward(input_ids: Any, attention_mask: Any = None, output_hidden_states: Any = None,
                return_dict: Any = None, **kwargs: Any) -> Any:
        if output_hidden_states or attention_mask is not None or kwargs:
            raise ConfigError(
                f"compiled text encoder {component.name!r} only returns the last hidden state",
                "do not combine it with clip_skip or attention masks",
            )
        out = module(input_ids=input_ids.to(module.device))
        return BaseModelOutputWithPooling(last_hidden_state=out["last_hidden_state"],
                                          pooler_output=out.get("pooler_output"))

    encoder.forward = forward
    return lambda: vars(encoder).pop("forward", None)


def _swap_unet(pipeline: Any, component: CompiledComponent) -> Any:
    """The UNet's forward replaced by the compiled (sample, timestep, encoder_hidden_states)
    module; the eager UNet object stays in place, so what the pipeline reads from it (config,
    dtype, device) is unchanged. Conditioning the build has no input for is refused."""
    import torch
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    unet, module = pipeline.unet, component.module

    def forward(sample: Any, timestep: Any, encoder_hidden_states: Any, *args: Any,
                return_dict: bool = True, **kwargs: Any) -> Any:
        extra = [k for k, v in kwargs.items() if v not in (None, {})] + (["positional"] if args else [])
        if extra:
            raise ConfigError(
                f"compiled UNet {component.name!r} takes (sample, timestep, "
                f"encoder_hidden_states) only; the pipeline passed {', '.join(sorted(extra))}",
                "use it with plain Stable Diffusion text-to-image / img2img / inpaint (no "
                "ControlNet, LCM timestep conditioning, IP-Adapter or LoRA scales)",
            )
        batch = sample.shape[0]
        steps = torch.as_tensor(timestep).reshape(-1)  # the pipeline passes one step for all
        steps = steps.expand(batch) if steps.numel() == 1 else steps.reshape(batch)
        out = module(sample=sample.to(module.device, module.dtype).contiguous(),
                     timestep=steps.to(module.device, module.dtype).contiguous(),
                     encoder_hidden_states=encoder_hidden_states.to(module.device,
                                                                     module.dtype).contiguous())
        noise = out["sample"].to(sample.device, sample.dtype)
        return UNet2DConditionOutput(sample=noise) if return_dict else (noise,)

    unet.forward = forward
    return lambda: vars(unet).pop("forward", None)


SWAPS = {"vae_decode": _swap_vae_decode, "clip_text": _swap_clip_text, "unet": _swap_unet}


@contextlib.contextmanager
def swapped(diffusion_model: Any, model_name: str, components: list[CompiledComponent]) -> Iterator[None]:
    """The loaded pipeline with `components` in place of its eager parts for the block; the eager
    parts are back afterwards (also on errors)."""
    builders = [c.builder for c in components]
    if len(set(builders)) != len(builders):
        raise ConfigError(f"two compiled models replace the same component: {builders}",
                          "name one compiled model per component")
    undo = []
    try:
        for component in components:
            if component.pipeline and component.pipeline != model_name:
                raise ConfigError(
                    f"compiled model {component.name!r} was built from {component.pipeline!r}, "
                    f"not {model_name!r}", f"use it with model.name={component.pipeline}",
                )
            undo.append(SWAPS[component.builder](diffusion_model.pipeline, component))
            log.info("%s: %s swapped in for the eager %s", model_name, component.name,
                     component.builder)
        yield
    finally:
        for restore in reversed(undo):
            restore()
