"""AutoencoderKL (Stable Diffusion VAE) decode and encode builders.

Resolution ranges are given in pixels; the decoder works in latents (pixels / scale factor, where
the scale factor is 2 ** (number of blocks - 1), 8 for SD), the encoder takes pixels that must be
multiples of the scale factor (exported as `scale * Dim`).
"""

from __future__ import annotations

from ..build import Build
from ..schemas import BuilderConfig
from ..specs import Dim, InputSpec, as_range, pixel_dim


def vae_scale_factor(config) -> int:
    return 2 ** (len(config.get("block_out_channels", [0])) - 1)


class _AutoencoderKLBuild(Build):
    model_name = "autoencoder_kl.{model_type}.{label}.b{batch}.r{resolution}.{dtype}.{device_tag}"
    config_schema = BuilderConfig

    def instantiate(self, config):
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_config(config)

    def from_pretrained(self, directory):
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_pretrained(str(directory))

    def prepare(self, model):
        # tiling and slicing split the batch / image in Python loops that export cannot follow
        model.disable_tiling()
        model.disable_slicing()
        return model

    def _batch(self) -> Dim:
        return Dim("batch", *as_range(self.build_kwargs["batch_size"], "batch_size"))


class AutoencoderKLDecodeBuilder(_AutoencoderKLBuild):
    """Latents -> image, via `AutoencoderKL._decode` (post_quant_conv + decoder)."""

    name = "vae_decode"
    model_type = "decode"
    model_forward = "_decode"
    model_output_names = ("image",)
    map_function_skip_keys = ("encoder.", "quant_conv.")

    def run_forward(self, model, latent):
        return (model._decode(latent, return_dict=False)[0],)

    def input_specs(self, config):
        scale = vae_scale_factor(config)
        height, width = self.pixel_ranges()
        return [
            InputSpec(
                "latent",
                (
                    self._batch(),
                    int(config.get("latent_channels", 4)),
                    pixel_dim("height", height, scale),
                    pixel_dim("width", width, scale),
                ),
            )
        ]


class AutoencoderKLEncodeBuilder(_AutoencoderKLBuild):
    """Image -> latent (the posterior's mode), via `AutoencoderKL.encode` (encoder + quant_conv)."""

    name = "vae_encode"
    model_type = "encode"
    model_forward = "encode"
    model_output_names = ("latent",)
    map_function_skip_keys = ("decoder.", "post_quant_conv.")

    def run_forward(self, model, image):
        return (model.encode(image, return_dict=False)[0].mode(),)

    def input_specs(self, config):
        scale = vae_scale_factor(config)
        height, width = self.pixel_ranges()
        return [
            InputSpec(
                "image",
                (
                    self._batch(),
                    int(config.get("in_channels", 3)),
                    pixel_dim("height", height, 1, multiple=scale),
                    pixel_dim("width", width, 1, multiple=scale),
                ),
            )
        ]
