"""OpenCLIP dense (per-patch) image features and the paired OpenCLIP text encoder.

Dense features follow MaskCLIP: in the last transformer block the query-key attention is dropped
and each patch's value embedding goes through the block's output projection, then ``ln_post`` and
the visual projection, which lands every patch in the joint image-text space. Images are resized
so their short side matches ``short_side`` and covered by sliding windows of the model's native
input size (so positional embeddings are used as trained); overlapping windows are averaged on
the patch grid and windows are batched across images.

Weights come only from a local checkpoint file (how a robot runs offline). A randomly initialised
model is built only when ``allow_random_weights`` is set explicitly (tests, timing benchmarks);
its output is never a vision-language result.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import ovseg3d_core.encoders.torchvision_compat  # noqa: F401  (before open_clip imports torchvision)
from ovseg3d_core.config import Config, setting
from ovseg3d_core.encoders import hub_offline
from ovseg3d_core.encoders.base import (
    CachedTextEncoder,
    EncoderError,
    FrameFeatures,
    WeightsNotFoundError,
    check_rgb,
)
from ovseg3d_core.frame import RGBDFrame

LOG = logging.getLogger(__name__)


@dataclass
class OpenCLIPConfig(Config):
    architecture: str = setting(
        "ViT-B-16", "open_clip model name (`ovseg3d-models list`) or the path of a model-config .json; not a hub tag"
    )
    allow_random_weights: bool = setting(
        False, "build a randomly initialised model when no checkpoint is given (tests and timing only, never results)"
    )
    random_seed: int = setting(0, "seed of the random initialisation when allow_random_weights is used", low=0)
    device: str = setting("cpu", "torch device, e.g. cpu or cuda")
    short_side: int = setting(448, "resize images so the shorter side has this many pixels (0 = keep)", low=0)
    window_stride: int = setting(224, "pixels between sliding windows (a multiple of the patch size)", low=1)
    batch_size: int = setting(8, "windows per forward pass", low=1, high=1024)
    normalize: bool = setting(True, "L2-normalise every patch feature (cosine scores against text)")
    cache_size: int = setting(8192, "text embeddings kept in the LRU cache of the text encoder", low=0)


def resolve_architecture(architecture: str) -> str:
    """The open_clip model name for ``architecture``: a known name, or a model-config .json registered here.

    A robot running a fine-tuned or custom ViT ships its architecture as open_clip's JSON config
    beside the weights; registering it makes it a name like any built-in one.
    """
    import open_clip

    if architecture.endswith(".json"):
        path = Path(architecture).expanduser()
        if not path.is_file():
            raise EncoderError(f"OpenCLIP architecture config {path} does not exist")
        try:
            json.loads(path.read_text())  # open_clip keeps a registered file and rescans it on every later add
            open_clip.add_model_config(path)
        except Exception as exc:  # json and open_clip raise several types for a malformed file
            raise EncoderError(f"OpenCLIP architecture config {path} is not usable: {exc}") from exc
        architecture = path.stem
    if architecture not in open_clip.list_models():
        raise EncoderError(
            f"unknown open_clip architecture {architecture!r} (hub tags are not used; `ovseg3d-models list` "
            "shows the known names)"
        )
    return architecture


def load_openclip_model(config: OpenCLIPConfig, checkpoint: str | Path | None = None) -> Any:
    """Build the open_clip model in eval mode from the local ``checkpoint`` file (or random, if allowed).

    Raises :class:`WeightsNotFoundError` naming the file and the reason when it is missing,
    unreadable or holds weights of another architecture.
    """
    import open_clip
    import torch

    architecture = resolve_architecture(config.architecture)
    if not checkpoint and not config.allow_random_weights:
        raise WeightsNotFoundError(
            f"OpenCLIP {config.architecture} needs a local checkpoint file: set checkpoint to its path "
            "(allow_random_weights is only for tests and timing)"
        )
    path = Path(checkpoint).expanduser() if checkpoint else None
    if path is not None and not path.is_file():
        raise WeightsNotFoundError(f"OpenCLIP checkpoint {path} does not exist")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.random_seed)
        with hub_offline():  # a Hugging Face text tower or tokenizer would otherwise stall ~45 s offline
            model = open_clip.create_model(architecture, pretrained=None, device="cpu")
    if path is not None:
        try:
            open_clip.load_checkpoint(model, str(path))
        except Exception as exc:  # torch.load / state-dict mismatch errors have many types
            raise WeightsNotFoundError(
                f"OpenCLIP checkpoint {path} is not usable for {config.architecture}: {_first_line(exc)}"
            ) from exc
    else:
        LOG.warning("OpenCLIP %s uses RANDOM weights (timing/test only, not a VLM)", config.architecture)
    return model.to(config.device).eval()


def _first_line(error: Exception, limit: int = 300) -> str:
    """A state-dict mismatch lists hundreds of keys; a log line and a parameter reply need the gist.

    That is the error's first line and its first detail (e.g. the first "size mismatch for ..."),
    which says that the file holds another architecture.
    """
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    line = f"{type(error).__name__}: {' '.join(lines[:2])}"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets covering ``[0, length)`` with windows of ``window``; the last one ends at the edge."""
    starts = list(range(0, max(length - window, 0) + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


class OpenCLIPDenseExtractor:
    """RGB image -> (H/p')x(W/p')xD MaskCLIP patch features in the OpenCLIP text space."""

    def __init__(
        self, config: OpenCLIPConfig | None = None, model: Any = None, checkpoint: str | Path | None = None
    ) -> None:
        import open_clip
        import torch

        self.config = config or OpenCLIPConfig()
        self.model = model if model is not None else load_openclip_model(self.config, checkpoint)
        visual = self.model.visual
        proj = getattr(visual, "proj", None)  # a ModifiedResNet has conv1 but no proj attribute
        if getattr(visual, "attn_pool", None) is not None or not hasattr(visual, "conv1") or proj is None:
            raise EncoderError(f"{self.config.architecture}: MaskCLIP features need a plain ViT with a projection")
        last = visual.transformer.resblocks[-1]
        if not isinstance(getattr(last, "attn", None), torch.nn.MultiheadAttention):
            raise EncoderError(f"{self.config.architecture}: last block has no standard multi-head attention")
        self._torch = torch
        self.window = _pair(visual.image_size)
        self.patch = _pair(visual.patch_size)
        if any(self.config.window_stride % p for p in self.patch):
            raise EncoderError(f"window_stride {self.config.window_stride} is not a multiple of the patch {self.patch}")
        cfg = open_clip.get_model_preprocess_cfg(self.model)
        device = next(self.model.parameters()).device
        self._dtype = next(self.model.parameters()).dtype
        self._mean = torch.tensor(cfg["mean"], device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg["std"], device=device).view(1, 3, 1, 1)
        self._device = device
        self.dim = int(visual.proj.shape[1])
        weights = Path(checkpoint).name if checkpoint else "RANDOM weights" if model is None else "given model"
        self.description = f"openclip {self.config.architecture} ({weights})"

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """Model-side image size: short side at ``short_side`` (at least one window), both sides on the patch grid."""
        scale = 1.0
        if self.config.short_side:
            scale = self.config.short_side / min(height, width)
        h = max(round(height * scale / self.patch[0]) * self.patch[0], self.window[0])
        w = max(round(width * scale / self.patch[1]) * self.patch[1], self.window[1])
        return h, w

    def grid_shape(self, height: int, width: int) -> tuple[int, int]:
        """Shape H'xW' of the patch grid returned for an input image of ``height`` x ``width``."""
        h, w = self.resized_shape(height, width)
        return h // self.patch[0], w // self.patch[1]

    def window_offsets(self, height: int, width: int) -> list[tuple[int, int]]:
        """Top-left pixel of every sliding window on the resized image of an input ``height`` x ``width``."""
        h, w = self.resized_shape(height, width)
        rows = _window_starts(h, self.window[0], self.config.window_stride)
        cols = _window_starts(w, self.window[1], self.config.window_stride)
        return [(top, left) for top in rows for left in cols]

    def extract(self, rgb: np.ndarray, output_size: tuple[int, int] | None = None) -> np.ndarray:
        return self.extract_many([rgb], output_size=output_size)[0]

    def extract_frame(self, frame: RGBDFrame, view_index: int = 0) -> FrameFeatures:
        """Patch-grid features of the frame's colour image; every patch carries a feature."""
        features = self.extract(frame.color)
        return FrameFeatures(features=features, valid=np.ones(features.shape[:2], dtype=bool))

    def extract_many(
        self, images: Sequence[np.ndarray], output_size: tuple[int, int] | None = None
    ) -> list[np.ndarray]:
        """Batch the sliding windows of several images; each result is H'xW'xD float32."""
        torch = self._torch
        images = [check_rgb(image) for image in images]
        if output_size is not None and (len(output_size) != 2 or min(output_size) <= 0):
            raise EncoderError(f"output_size must be (height, width) > 0, got {output_size}")
        with torch.inference_mode():
            tiles, places, grids = [], [], []
            for index, image in enumerate(images):
                tensor = self._preprocess(image)
                _, _, h, w = tensor.shape
                grids.append((h // self.patch[0], w // self.patch[1]))
                for top, left in self.window_offsets(*image.shape[:2]):
                    tiles.append(tensor[:, :, top : top + self.window[0], left : left + self.window[1]])
                    places.append((index, top // self.patch[0], left // self.patch[1]))
            sums = [torch.zeros(gh, gw, self.dim, device=self._device) for gh, gw in grids]
            counts = [torch.zeros(gh, gw, 1, device=self._device) for gh, gw in grids]
            gh_win, gw_win = self.window[0] // self.patch[0], self.window[1] // self.patch[1]
            for start in range(0, len(tiles), self.config.batch_size):
                batch = torch.cat(tiles[start : start + self.config.batch_size])
                features = self._patch_features(batch).reshape(len(batch), gh_win, gw_win, self.dim)
                for feature, (index, row, col) in zip(features, places[start : start + len(batch)], strict=True):
                    sums[index][row : row + gh_win, col : col + gw_win] += feature.float()
                    counts[index][row : row + gh_win, col : col + gw_win] += 1
            return [self._finish(total / count, output_size) for total, count in zip(sums, counts, strict=True)]

    def _preprocess(self, image: np.ndarray) -> Any:
        torch = self._torch
        tensor = torch.tensor(image, device=self._device).permute(2, 0, 1)[None].float() / 255
        size = self.resized_shape(*image.shape[:2])
        if size != tuple(tensor.shape[2:]):
            tensor = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", antialias=True)
        return ((tensor - self._mean) / self._std).to(self._dtype)

    def _patch_features(self, batch: Any) -> Any:
        """MaskCLIP: value path of the last block (no q-k attention, no MLP) -> ln_post -> proj."""
        torch = self._torch
        visual = self.model.visual
        x = visual._embeds(batch)
        blocks = visual.transformer.resblocks
        batch_first = getattr(visual.transformer, "batch_first", True)
        x = x if batch_first else x.transpose(0, 1)
        for block in blocks[:-1]:
            x = block(x)
        x = x if batch_first else x.transpose(0, 1)
        last = blocks[-1]
        attn = last.attn
        width = x.shape[-1]
        v = torch.nn.functional.linear(last.ln_1(x), attn.in_proj_weight[2 * width :], attn.in_proj_bias[2 * width :])
        v = attn.out_proj(v)[:, 1:]
        return visual.ln_post(v) @ visual.proj

    def _finish(self, grid: Any, output_size: tuple[int, int] | None) -> np.ndarray:
        torch = self._torch
        if output_size is not None and tuple(output_size) != tuple(grid.shape[:2]):
            grid = torch.nn.functional.interpolate(
                grid.permute(2, 0, 1)[None], size=tuple(output_size), mode="bilinear", align_corners=False
            )[0].permute(1, 2, 0)
        if self.config.normalize:
            grid = torch.nn.functional.normalize(grid, dim=-1)
        return grid.float().cpu().numpy()


class OpenCLIPTextEncoder(CachedTextEncoder):
    """Raw text -> unit vectors from the OpenCLIP text tower; wrap in ``PromptedTextEncoder`` for prompts."""

    def __init__(
        self, config: OpenCLIPConfig | None = None, model: Any = None, checkpoint: str | Path | None = None
    ) -> None:
        import open_clip
        import torch

        self.config = config or OpenCLIPConfig()
        super().__init__(self.config.cache_size)
        self.model = model if model is not None else load_openclip_model(self.config, checkpoint)
        with hub_offline():
            self._tokenizer = open_clip.get_tokenizer(resolve_architecture(self.config.architecture))
        self._torch = torch
        self._device = next(self.model.parameters()).device
        self.dim = int(self.model.visual.output_dim)  # CLIP's image and text towers share the embedding size

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        with self._torch.inference_mode():
            tokens = self._tokenizer(texts).to(self._device)
            return self.model.encode_text(tokens, normalize=True).float().cpu().numpy()
