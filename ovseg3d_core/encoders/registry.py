"""Build encoders by name from one :class:`EncoderConfig`, so nodes and benchmarks never hard-code a backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ovseg3d_core.config import Config, ConfigError, setting
from ovseg3d_core.encoders.base import EncoderError, FrameFeatureSource, TextEncoder
from ovseg3d_core.encoders.minilm import MiniLMConfig
from ovseg3d_core.encoders.noisy_oracle import NoisyOracleConfig
from ovseg3d_core.encoders.openclip import OpenCLIPConfig
from ovseg3d_core.encoders.prompts import PromptConfig

TEXT_ENCODERS = ("minilm", "openclip")
DENSE_EXTRACTORS = ("openclip", "noisy_oracle")


@dataclass
class EncoderConfig(Config):
    text: str = setting("minilm", "text encoder: minilm or openclip", choices=TEXT_ENCODERS)
    dense: str = setting(
        "noisy_oracle",
        "2D feature source: openclip (real weights) or noisy_oracle (benchmarks)",
        choices=DENSE_EXTRACTORS,
    )
    prompts: PromptConfig = setting(PromptConfig(), "prompt templates applied to class names and queries")
    minilm: MiniLMConfig = setting(MiniLMConfig(), "MiniLM text encoder settings")
    openclip: OpenCLIPConfig = setting(OpenCLIPConfig(), "OpenCLIP model, checkpoint and tiling settings")
    noisy_oracle: NoisyOracleConfig = setting(NoisyOracleConfig(), "noisy-oracle failure rates and seed")

    def validate(self) -> None:
        super().validate()
        if self.dense == "openclip" and self.text != "openclip":
            raise ConfigError("OpenCLIP dense features live in the OpenCLIP text space: set text to openclip")


def build_text_encoder(config: EncoderConfig, prompted: bool = True) -> TextEncoder:
    """The configured text encoder, wrapped with the prompt templates unless ``prompted`` is False."""
    from ovseg3d_core.encoders.prompts import PromptedTextEncoder

    if config.text == "minilm":
        from ovseg3d_core.encoders.minilm import MiniLMTextEncoder

        encoder: TextEncoder = MiniLMTextEncoder(config.minilm)
    else:
        from ovseg3d_core.encoders.openclip import OpenCLIPTextEncoder

        encoder = OpenCLIPTextEncoder(config.openclip)
    return PromptedTextEncoder(encoder, config.prompts) if prompted else encoder


def build_dense_extractor(
    config: EncoderConfig,
    class_names: Sequence[str] | None = None,
    text_encoder: TextEncoder | None = None,
) -> FrameFeatureSource:
    """The configured 2D feature source.

    The noisy oracle needs the dataset's ``class_names`` and the (prompted) text encoder whose
    space it imitates; pass the same encoder the labeler uses so queries see the same space.
    OpenCLIP dense features reuse ``text_encoder``'s model when it is an OpenCLIP one.
    """
    if config.dense == "openclip":
        from ovseg3d_core.encoders.openclip import OpenCLIPDenseExtractor, OpenCLIPTextEncoder

        inner = getattr(text_encoder, "encoder", text_encoder)
        model = inner.model if isinstance(inner, OpenCLIPTextEncoder) else None
        return OpenCLIPDenseExtractor(config.openclip, model=model)
    from ovseg3d_core.encoders.noisy_oracle import NoisyOracle

    if not class_names:
        raise EncoderError("the noisy oracle needs the dataset's class names")
    return NoisyOracle(class_names, text_encoder or build_text_encoder(config), config.noisy_oracle)
