"""UNet2DConditionModel builder: (sample, timestep, encoder_hidden_states) -> noise prediction,
with dynamic batch and resolution. Resolution is in pixels; the UNet sees VAE latents
(pixels / vae_scale_factor), whose sides must be multiples of 2 ** (number of blocks - 1)."""

from __future__ import annotations

from mlplatform.api import ConfigError

from ..build import Build
from ..schemas import UNetBuilderConfig
from ..specs import Dim, InputSpec, as_range, pixel_dim


class UNet2DConditionBuilder(Build):
    """UNet2DConditionModel: (sample, timestep, encoder_hidden_states) -> sample."""

    name = "unet"
    model_type = "unet"
    model_name = (
        "unet_2d_condition.{label}.b{batch}.r{resolution}.t{sequence_length}.{dtype}.{device_tag}"
    )
    model_output_names = ("sample",)
    config_schema = UNetBuilderConfig

    def instantiate(self, config):
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel.from_config(config)

    def from_pretrained(self, directory):
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel.from_pretrained(str(directory))

    def run_forward(self, model, sample, timestep, encoder_hidden_states):
        return (model(sample, timestep, encoder_hidden_states, return_dict=False)[0],)

    def input_specs(self, config):
        multiple = 2 ** (len(config["block_out_channels"]) - 1)
        scale = self.build_kwargs["vae_scale_factor"]
        if scale < 1:
            raise ConfigError(
                f"build_kwargs.vae_scale_factor is {scale}; it is the VAE's pixels per latent",
                "pass builder.build_kwargs.vae_scale_factor=8 (Stable Diffusion's VAE)",
            )
        height, width = self.pixel_ranges()
        batch = Dim("batch", *as_range(self.build_kwargs["batch_size"], "batch_size"))
        sequence = Dim(
            "sequence", *as_range(self.build_kwargs["sequence_length"], "sequence_length")
        )
        cross = config.get("cross_attention_dim", 768)
        cross = cross[0] if isinstance(cross, (list, tuple)) else cross
        return [
            InputSpec(
                "sample",
                (
                    batch,
                    int(config.get("in_channels", 4)),
                    pixel_dim("height", height, scale, multiple),
                    pixel_dim("width", width, scale, multiple),
                ),
            ),
            InputSpec("timestep", (batch,), dtype="float_uniform", low=0, high=1000),
            InputSpec("encoder_hidden_states", (batch, sequence, int(cross))),
        ]
