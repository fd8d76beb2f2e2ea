"""Text encoder builders: CLIP (SD's text encoder; dynamic batch, 77 tokens by default) and T5."""

from __future__ import annotations

from ..build import Build
from ..schemas import T5EncoderBuilderConfig, TextEncoderBuilderConfig
from ..specs import Dim, InputSpec, as_range


class _TextEncoderBuild(Build):
    model_name = "{model_type}.{label}.b{batch}.t{sequence_length}.{dtype}.{device_tag}"

    def input_specs(self, config):
        batch = Dim("batch", *as_range(self.build_kwargs["batch_size"], "batch_size"))
        sequence = Dim(
            "sequence", *as_range(self.build_kwargs["sequence_length"], "sequence_length")
        )
        return [
            InputSpec(
                "input_ids",
                (batch, sequence),
                dtype="long",
                low=0,
                high=int(config.get("vocab_size", 2)),
            )
        ]


class CLIPTextBuilder(_TextEncoderBuild):
    """CLIP text encoder: input_ids -> (last_hidden_state, pooler_output)."""

    name = "clip_text"
    model_type = "clip_text"
    model_output_names = ("last_hidden_state", "pooler_output")
    config_schema = TextEncoderBuilderConfig

    def instantiate(self, config):
        from transformers import CLIPTextConfig, CLIPTextModel

        return CLIPTextModel(CLIPTextConfig.from_dict(config))

    def from_pretrained(self, directory):
        from transformers import CLIPTextModel

        return CLIPTextModel.from_pretrained(str(directory))

    def run_forward(self, model, input_ids):
        out = model(input_ids=input_ids, return_dict=False)
        return (out[0], out[1])


class T5EncoderBuilder(_TextEncoderBuild):
    """T5 encoder: input_ids -> last_hidden_state."""

    name = "t5_encoder"
    model_type = "t5_encoder"
    model_output_names = ("last_hidden_state",)
    # `shared.` and `encoder.embed_tokens.` are tied copies; the encoder owns what it uses
    config_schema = T5EncoderBuilderConfig

    def instantiate(self, config):
        from transformers import T5Config, T5EncoderModel

        return T5EncoderModel(T5Config.from_dict(config))

    def from_pretrained(self, directory):
        from transformers import T5EncoderModel

        return T5EncoderModel.from_pretrained(str(directory))

    def run_forward(self, model, input_ids):
        return (model(input_ids=input_ids, return_dict=False)[0],)
