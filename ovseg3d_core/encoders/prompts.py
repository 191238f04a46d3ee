"""Prompt templates around class names, applied in the text-encoder layer.

OpenScene and GeoPurify embed "a X in a scene" rather than the bare class name; averaging over
several templates (a prompt ensemble) is the usual CLIP trick for steadier class vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ovseg3d_core.config import Config, ConfigError, setting
from ovseg3d_core.encoders.base import TextEncoder, check_texts, l2_normalise

DEFAULT_TEMPLATE = "a {} in a scene"
ENSEMBLE_TEMPLATES = [
    "a {} in a scene",
    "a photo of a {}",
    "a {} in a room",
    "there is a {} in the scene",
    "a picture of a {}",
]


@dataclass
class PromptConfig(Config):
    template: str = setting(DEFAULT_TEMPLATE, "template with one {} for the class name (GeoPurify/OpenScene prompt)")
    ensemble: bool = setting(False, "average the embeddings of all ensemble_templates instead of using template")
    ensemble_templates: list[str] = setting(ENSEMBLE_TEMPLATES, "templates averaged when ensemble is true")

    def validate(self) -> None:
        super().validate()
        for template in [self.template, *self.ensemble_templates]:
            if template.count("{}") != 1:
                raise ConfigError(f"prompt template {template!r} must contain exactly one {{}}")
        if self.ensemble and not self.ensemble_templates:
            raise ConfigError("ensemble is on but ensemble_templates is empty")

    @property
    def templates(self) -> list[str]:
        return list(self.ensemble_templates) if self.ensemble else [self.template]


class PromptedTextEncoder:
    """Wraps a raw :class:`TextEncoder`: class names in, prompt(-ensemble) embeddings out."""

    def __init__(self, encoder: TextEncoder, config: PromptConfig | None = None) -> None:
        self.encoder = encoder
        self.config = config or PromptConfig()
        self.dim = encoder.dim

    def prompts(self, name: str) -> list[str]:
        return [template.format(name) for template in self.config.templates]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        names = check_texts(texts)
        if not names:
            return np.zeros((0, self.dim), dtype=np.float32)
        templates = self.config.templates
        flat = [template.format(name) for name in names for template in templates]
        embeddings = self.encoder.encode(flat).reshape(len(names), len(templates), self.dim)
        return l2_normalise(embeddings.mean(axis=1))
