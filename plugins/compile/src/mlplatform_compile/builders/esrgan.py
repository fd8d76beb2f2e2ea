"""ESRGAN / RRDBNet upscaler builder, loaded through spandrel's architecture detection.

The source is a weights file (.safetensors, or .pth/.pt read with `torch.load(weights_only=True)`,
never full unpickling), a directory holding one (`model_kwargs.filename` picks it), or a hub repo
with `model_kwargs.filename`. `builtin:tiny_esrgan` + random_weights builds spandrel's ESRGAN from
shipped keyword arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlplatform.api import ConfigError, ModelSourceError

from .. import model_source
from ..build import Build
from ..schemas import ESRGANBuilderConfig
from ..specs import Dim, InputSpec, as_range

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")


def read_state_dict(path: Path) -> dict[str, Any]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # SafetensorError, OSError: a truncated or foreign file
            raise ModelSourceError(
                f"{path} could not be read as safetensors ({type(exc).__name__}: {exc})",
                "re-download or re-export the weights file; it is truncated or not safetensors",
            ) from exc
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelSourceError(
            f"{path} could not be read as plain weights ({type(exc).__name__}: {exc})",
            "convert it to .safetensors; full unpickling of untrusted files is never done",
        ) from exc
    for key in ("params_ema", "params", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


class ESRGANBuilder(Build):
    """ESRGAN / RRDBNet upscaler (spandrel): image -> upscaled image."""

    name = "esrgan"
    model_type = "esrgan"
    model_name = "esrgan.{label}.b{batch}.r{resolution}.{dtype}.{device_tag}"
    model_output_names = ("upscaled",)
    config_schema = ESRGANBuilderConfig
    config_file = None

    def source(self):
        if self._source is not None:
            return self._source
        if self.hf_hub.startswith(model_source.BUILTIN_PREFIX):
            self._source = model_source.resolve(
                self.hf_hub, random_weights=self.random_weights, seed=self.seed
            )
            return self._source
        if self.random_weights:
            raise ConfigError(
                "ESRGAN weights files carry no config to randomise",
                "use hf_hub=builtin:tiny_esrgan with random_weights=true, or real weights",
            )
        path = self._weights_file()
        descriptor = self._descriptor(read_state_dict(path))
        config = {
            "architecture": descriptor.architecture.id,
            "scale": descriptor.scale,
            "input_channels": descriptor.input_channels,
            "output_channels": descriptor.output_channels,
            "file": path.name,
        }
        self._loaded = descriptor.model
        self._source = model_source.ModelSource(
            self.hf_hub,
            config,
            path.parent,
            False,
            self.seed,
            self.model_kwargs.get("subfolder"),
            self.model_kwargs.get("revision"),
        )
        return self._source

    def _weights_file(self) -> Path:
        filename = self.model_kwargs.get("filename")
        local = Path(self.hf_hub).expanduser()
        if local.is_file():
            return local
        if local.is_dir():
            if filename:
                path = local / filename
                if not path.is_file():
                    raise ModelSourceError(
                        f"no {filename} in {local}", "check model_kwargs.filename"
                    )
                return path
            candidates = sorted(p for p in local.iterdir() if p.suffix in WEIGHT_SUFFIXES)
            if len(candidates) != 1:
                raise ModelSourceError(
                    f"{local} holds {len(candidates)} weight files ({[p.name for p in candidates]})",
                    "name one with model_kwargs.filename",
                )
            return candidates[0]
        if not filename:
            raise ModelSourceError(
                f"ESRGAN source {self.hf_hub!r} is neither a local file nor a directory",
                "for a hub repo, set model_kwargs.filename (e.g. RealESRGAN_x4plus.pth)",
            )
        from huggingface_hub import hf_hub_download

        from mlplatform.api import hub_offline

        try:
            return Path(
                hf_hub_download(
                    self.hf_hub,
                    filename,
                    subfolder=self.model_kwargs.get("subfolder"),
                    revision=self.model_kwargs.get("revision"),
                    local_files_only=hub_offline(),
                )
            )
        except Exception as exc:
            raise ModelSourceError(
                f"{filename} from {self.hf_hub!r} is not available ({type(exc).__name__})",
                "check the repo id and file name; offline (HF_HUB_OFFLINE=1) it must be in the cache",
            ) from exc

    @staticmethod
    def _descriptor(state_dict):
        from spandrel import ModelLoader, UnsupportedModelError

        try:
            return ModelLoader().load_from_state_dict(state_dict)
        except UnsupportedModelError as exc:
            raise ModelSourceError(
                "spandrel does not recognise these weights as a supported upscaler",
                "point at an ESRGAN/RRDBNet (or other spandrel-supported) checkpoint",
            ) from exc

    def instantiate(self, config):
        from spandrel.architectures.ESRGAN import ESRGAN

        return ESRGAN(**{k: v for k, v in config.items() if not k.startswith("_")})

    def from_pretrained(self, directory):
        self.source()
        return self._loaded

    def input_specs(self, config):
        batch = Dim("batch", *as_range(self.build_kwargs["batch_size"], "batch_size"))
        height, width = self.pixel_ranges()
        channels = int(config.get("in_nc", config.get("input_channels", 3)))
        return [
            InputSpec(
                "image",
                (batch, channels, Dim("height", *height), Dim("width", *width)),
                dtype="float_uniform",
                low=0,
                high=1,
            )
        ]
