"""Build encoders by name from one :class:`EncoderConfig`, so nodes and benchmarks never hard-code a backend.

The default 2D source is the real one, OpenCLIP dense features from a local checkpoint file
(``checkpoint``). Without that file no 2D source exists: a host maps geometry only and says what
is missing (:func:`missing_weights_reason`). The noisy oracle is a benchmark instrument that a
benchmark selects explicitly; it reads ground-truth label images, which :func:`frame_inputs`
declares so a node subscribes to them only when that source is configured.
"""

from __future__ import annotations

from dataclasses import dataclass

from ovseg3d_core.config import Config, ConfigError, setting
from ovseg3d_core.encoders import noisy_oracle
from ovseg3d_core.encoders.base import FrameFeatureSource, TextEncoder
from ovseg3d_core.encoders.minilm import MiniLMConfig, MiniLMTextEncoder
from ovseg3d_core.encoders.noisy_oracle import NoisyOracle, NoisyOracleConfig
from ovseg3d_core.encoders.openclip import (
    OpenCLIPConfig,
    OpenCLIPDenseExtractor,
    OpenCLIPTextEncoder,
    load_openclip_model,
)
from ovseg3d_core.encoders.prompts import PromptConfig, PromptedTextEncoder

TEXT_BACKENDS = ("minilm", "openclip")
"""Concrete text encoders: ``auto`` resolves to one, and the retrieval model's frozen text tower picks one too."""
TEXT_ENCODERS = ("auto", *TEXT_BACKENDS)
DENSE_EXTRACTORS = ("openclip", "noisy_oracle")
WEIGHTS_HELP = "README section 'Model weights'"


@dataclass
class EncoderConfig(Config):
    dense: str = setting(
        "openclip",
        "2D feature source: openclip (a vision-language model, weights from checkpoint) or noisy_oracle "
        "(a benchmark instrument that reads ground-truth label images; never a robot's source)",
        choices=DENSE_EXTRACTORS,
    )
    checkpoint: str = setting(
        "",
        "local weights file of the 2D model (OpenCLIP .pt/.bin/.safetensors for openclip.architecture); "
        f"empty = map geometry only until one is set ({WEIGHTS_HELP})",
    )
    text: str = setting(
        "auto",
        "text encoder: auto (the 2D model's own text tower for openclip, MiniLM for the noisy oracle), "
        "minilm or openclip",
        choices=TEXT_ENCODERS,
    )
    prompts: PromptConfig = setting(PromptConfig(), "prompt templates applied to class names and queries")
    minilm: MiniLMConfig = setting(MiniLMConfig(), "MiniLM text encoder settings")
    openclip: OpenCLIPConfig = setting(OpenCLIPConfig(), "OpenCLIP architecture and tiling settings")
    noisy_oracle: NoisyOracleConfig = setting(NoisyOracleConfig(), "noisy-oracle class names, failure rates, seed")

    def validate(self) -> None:
        super().validate()
        if self.dense == "openclip" and self.text == "minilm":
            raise ConfigError("OpenCLIP dense features live in the OpenCLIP text space: set text to auto or openclip")

    @property
    def text_backend(self) -> str:
        """The text encoder ``text`` resolves to: the one whose space the 2D features live in."""
        if self.text != "auto":
            return self.text
        return "openclip" if self.dense == "openclip" else "minilm"

    @property
    def needs_weights(self) -> bool:
        """Whether the 2D source or the text encoder loads the OpenCLIP model from ``checkpoint``."""
        return "openclip" in (self.dense, self.text_backend)

    def missing_weights_reason(self) -> str | None:
        """Why no 2D features can be made with this config (no checkpoint, no random weights), or None."""
        if not self.needs_weights or self.checkpoint or self.openclip.allow_random_weights:
            return None
        return (
            f"no 2D model weights: set segmenter.encoders.checkpoint to a local OpenCLIP "
            f"{self.openclip.architecture} file (see the {WEIGHTS_HELP}); mapping geometry only"
        )


def frame_inputs(config: EncoderConfig) -> tuple[str, ...]:
    """RGBDFrame fields the configured 2D source reads beyond colour, depth, intrinsics and pose."""
    return noisy_oracle.frame_inputs(config.noisy_oracle) if config.dense == "noisy_oracle" else ()


def load_shared_model(config: EncoderConfig):
    """The OpenCLIP model both towers use (loaded once from ``checkpoint``), or None if neither does."""
    if not config.needs_weights:
        return None
    return load_openclip_model(config.openclip, config.checkpoint or None)


def build_text_encoder(config: EncoderConfig, prompted: bool = True, model=None) -> TextEncoder:
    """The configured text encoder, wrapped with the prompt templates unless ``prompted`` is False.

    ``model`` is an OpenCLIP model already loaded by :func:`load_shared_model`.
    """
    if config.text_backend == "minilm":
        encoder: TextEncoder = MiniLMTextEncoder(config.minilm)
    else:
        encoder = OpenCLIPTextEncoder(config.openclip, model, config.checkpoint or None)
    return PromptedTextEncoder(encoder, config.prompts) if prompted else encoder


def build_dense_extractor(
    config: EncoderConfig, text_encoder: TextEncoder | None = None, model=None
) -> FrameFeatureSource:
    """The configured 2D feature source.

    The noisy oracle imitates the space of ``text_encoder`` (pass the prompted encoder the labeler
    uses, so queries see the same space). OpenCLIP dense features use ``model`` when given.
    """
    if config.dense == "openclip":
        return OpenCLIPDenseExtractor(config.openclip, model, config.checkpoint or None)
    oracle = config.noisy_oracle
    return NoisyOracle(oracle.class_names, text_encoder or build_text_encoder(config), oracle)
