"""The builders, one module per model family; `BUILDERS` maps registry names to classes."""

from .autoencoder_kl import AutoencoderKLDecodeBuilder, AutoencoderKLEncodeBuilder
from .esrgan import ESRGANBuilder
from .text_encoders import CLIPTextBuilder, T5EncoderBuilder
from .unet import UNet2DConditionBuilder

BUILDERS = {
    cls.name: cls
    for cls in (
        AutoencoderKLDecodeBuilder,
        AutoencoderKLEncodeBuilder,
        UNet2DConditionBuilder,
        CLIPTextBuilder,
        T5EncoderBuilder,
        ESRGANBuilder,
    )
}

__all__ = ["BUILDERS", *(cls.__name__ for cls in BUILDERS.values())]
