"""The GeoPurify student affinity network: a sparse residual 3D CNN (spconv) that maps voxel inputs
to 128-d unit embeddings whose cosine similarities drive geometry-guided pooling.

Two input variants (DESIGN §3): ``official`` = per-voxel semantic feature + colour + normal, and
``geometry`` = colour + normal (+ optional height), which does not depend on any 2D model. spconv
(a 300 MB extension, ~10 s to import) is imported only when a network is built or run.
On CPU every sparse convolution must use ``ConvAlgo.Native`` with ``bias=False`` + BatchNorm; the
algorithm is switched to spconv's default when the input lives on CUDA (weights are KRSC either way).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ovseg3d_core.atomic_file import atomic_torch_save
from ovseg3d_core.config import Config, setting
from ovseg3d_core.paths import student_checkpoint

SHIPPED_CHECKPOINT = student_checkpoint()


class StudentInputError(ValueError):
    """The voxels given to the student are empty, mis-shaped or contain non-finite values."""


class StudentCheckpointError(FileNotFoundError):
    """A student checkpoint is missing or does not describe a student."""


@dataclass
class StudentConfig(Config):
    """Architecture and input layout of the student affinity network."""

    variant: str = setting(
        "geometry",
        "input channels: geometry = colour+normal(+height); official = semantic+colour+normal",
        choices=("geometry", "official"),
    )
    semantic_dim: int = setting(512, "width of the per-voxel semantic feature (official variant only)", low=1)
    use_height: bool = setting(False, "add height above the scene's lowest voxel (needs a z-up world frame)")
    hidden: int = setting(64, "channels of the residual trunk (official code: 512; 64 meets the CPU budget)", low=4)
    blocks: int = setting(
        4, "residual blocks (two 3x3x3 submanifold convolutions each, at 2x voxel size)", low=1, high=32
    )
    out_dim: int = setting(128, "embedding size (L2-normalised)", low=2)
    voxel_size: float = setting(0.02, "voxel edge in metres (turns voxel indices into heights)", low=1e-4)

    @property
    def in_channels(self) -> int:
        if self.variant == "official":
            return self.semantic_dim + 6
        return 6 + int(self.use_height)

    @property
    def receptive_radius(self) -> int:
        """Chebyshev distance in voxels beyond which an input (or a voxel's presence) cannot change an embedding.

        Voxel v reads the full-resolution input convolution at v +- 1 (the skip) and the coarse cell
        floor(v / 2), which after ``2 * blocks`` 3x3x3 convolutions reads coarse cells within
        ``2 * blocks``, i.e. fine voxels w with |w - v| <= 4 * blocks + 1, each reading its inputs at
        w +- 1: 4 * blocks + 2 (18 for four blocks; a sub-forward with this much context around a
        voxel reproduces its full-map embedding bit for bit, tests/test_incremental_purification.py).
        """
        return 4 * self.blocks + 2


def student_input_features(
    cfg: StudentConfig,
    coords: np.ndarray,
    colors: np.ndarray,
    normals: np.ndarray,
    semantic: np.ndarray | None = None,
) -> np.ndarray:
    """Per-voxel input channels (N x in_channels, float32) in the layout ``cfg`` expects.

    Colours may be uint8 (0-255) or float in [0, 1]; both become [-1, 1] so all channels share a scale.
    """
    coords = np.asarray(coords)
    n = len(coords)
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise StudentInputError(f"voxel coords must be N x 3, got shape {coords.shape}")
    if n == 0:
        raise StudentInputError("the scene has no voxels")
    colors = np.asarray(colors)
    colors = colors.astype(np.float32) / 255.0 if colors.dtype == np.uint8 else colors.astype(np.float32)
    normals = np.asarray(normals, dtype=np.float32)
    for name, arr in (("colors", colors), ("normals", normals)):
        if arr.shape != (n, 3):
            raise StudentInputError(f"{name} must be {n} x 3 to match the voxels, got {arr.shape}")
    parts = []
    if cfg.variant == "official":
        if semantic is None:
            raise StudentInputError("the official student variant needs per-voxel semantic features")
        semantic = np.asarray(semantic, dtype=np.float32)
        if semantic.shape != (n, cfg.semantic_dim):
            raise StudentInputError(f"semantic features must be {n} x {cfg.semantic_dim}, got {semantic.shape}")
        parts.append(semantic)
    parts += [colors * 2.0 - 1.0, normals]
    if cfg.variant == "geometry" and cfg.use_height:
        z = coords[:, 2].astype(np.float32)
        parts.append(((z - z.min()) * cfg.voxel_size)[:, None])
    feats = np.concatenate(parts, axis=1)
    if not np.isfinite(feats).all():
        bad = int((~np.isfinite(feats).all(axis=1)).sum())
        raise StudentInputError(f"{bad} voxels have NaN/inf input features (colour, normal or semantic)")
    return feats


def _sparse_tensor(coords: torch.Tensor, feats: torch.Tensor, batch: torch.Tensor | None) -> Any:
    import spconv.pytorch as spconv

    if coords.ndim != 2 or coords.shape[1] != 3 or feats.ndim != 2 or len(coords) != len(feats):
        raise StudentInputError(
            f"need N x 3 coords and N x C features, got {tuple(coords.shape)}, {tuple(feats.shape)}"
        )
    if len(coords) == 0:
        raise StudentInputError("the scene has no voxels")
    if not torch.isfinite(feats).all():
        raise StudentInputError("input features contain NaN/inf")
    coords = coords.to(torch.int64)
    # Shift to non-negative indices by an even offset: the stride-2 grid stays aligned to the world
    # grid, so a voxel's embedding does not change when the map grows in some direction.
    coords = coords - torch.div(coords.min(dim=0).values, 2, rounding_mode="floor") * 2
    batch = torch.zeros(len(coords), dtype=torch.int64, device=coords.device) if batch is None else batch.long()
    indices = torch.cat([batch[:, None], coords], dim=1).to(torch.int32).to(feats.device)
    # Even extents (>= 2) so the stride-2 level never has a zero-sized axis.
    shape = ((coords.max(dim=0).values + 2) // 2 * 2).tolist()
    return spconv.SparseConvTensor(feats, indices, shape, int(batch.max().item()) + 1)


def _subm(c_in: int, c_out: int, key: str) -> torch.nn.Module:
    import spconv.pytorch as spconv

    # Layers sharing an indice key reuse one set of neighbour pairs, so they must share the algorithm.
    return spconv.SubMConv3d(c_in, c_out, 3, padding=1, bias=False, indice_key=key, algo=spconv.ConvAlgo.Native)


class ResidualBlock(nn.Module):
    """Two submanifold 3x3x3 convolutions with BatchNorm and an identity shortcut."""

    def __init__(self, channels: int, key: str) -> None:
        super().__init__()
        self.conv1 = _subm(channels, channels, key)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv2 = _subm(channels, channels, key)
        self.bn2 = nn.BatchNorm1d(channels)

    def forward(self, x: Any) -> Any:
        out = self.conv1(x)
        out = out.replace_feature(torch.relu(self.bn1(out.features)))
        out = self.conv2(out)
        return out.replace_feature(torch.relu(self.bn2(out.features) + x.features))


class SparseResidualStudent(nn.Module):
    """Input conv -> stride-2 down -> residual blocks -> transposed conv up (+ skip) -> linear -> L2 norm.

    The residual trunk runs at twice the voxel size: on surfaces that is ~4x fewer voxels and twice
    the receptive field, which is what brings 100k voxels under the CPU time budget; the full-resolution
    skip keeps neighbouring voxels distinguishable. Parameter-name prefixes ``input.`` and ``output.``
    are what the layer-wise learning rates key on.
    """

    def __init__(self, cfg: StudentConfig | None = None) -> None:
        import spconv.pytorch as spconv

        super().__init__()
        self.config = cfg = cfg or StudentConfig()
        h = cfg.hidden
        native = spconv.ConvAlgo.Native
        self.input = _subm(cfg.in_channels, h, "full")
        self.input_bn = nn.BatchNorm1d(h)
        self.down = spconv.SparseConv3d(h, h, 2, stride=2, bias=False, indice_key="down", algo=native)
        self.down_bn = nn.BatchNorm1d(h)
        self.blocks = nn.ModuleList([ResidualBlock(h, "coarse") for _ in range(cfg.blocks)])
        self.up = spconv.SparseInverseConv3d(h, h, 2, bias=False, indice_key="down", algo=native)
        self.up_bn = nn.BatchNorm1d(h)
        self.output = nn.Linear(2 * h, cfg.out_dim)
        self.meta: dict[str, Any] = {}

    def _match_algorithm(self, device: torch.device) -> None:
        import spconv.pytorch as spconv
        from spconv.pytorch.conv import SparseConvolution

        wanted = spconv.ConvAlgo.Native if device.type == "cpu" else spconv.ConvAlgo.MaskImplicitGemm
        for module in self.modules():
            if isinstance(module, SparseConvolution):
                module.algo = wanted

    def forward(self, coords: torch.Tensor, feats: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        """Embed N voxels: integer ``coords`` (N x 3), ``feats`` (N x in_channels) -> N x out_dim unit rows.

        ``batch`` (N ints) packs several scenes into one call; without it all voxels are one scene.
        """
        if feats.ndim != 2 or feats.shape[1] != self.config.in_channels:
            raise StudentInputError(f"student expects N x {self.config.in_channels} features, got {tuple(feats.shape)}")
        self._match_algorithm(feats.device)
        x = _sparse_tensor(coords, feats, batch)
        x = self.input(x)
        skip = torch.relu(self.input_bn(x.features))
        x = self.down(x.replace_feature(skip))
        x = x.replace_feature(torch.relu(self.down_bn(x.features)))
        for block in self.blocks:
            x = block(x)
        x = self.up(x)
        fine = torch.relu(self.up_bn(x.features))
        return nn.functional.normalize(self.output(torch.cat([skip, fine], dim=1)), dim=1)


def build_student(cfg: StudentConfig | None = None) -> SparseResidualStudent:
    """A randomly initialised student (CPU algorithms; it switches when given CUDA tensors)."""
    return SparseResidualStudent(cfg)


def embed_voxels(
    model: torch.nn.Module, coords: np.ndarray, feats: np.ndarray, device: str | None = None
) -> np.ndarray:
    """Run a student in eval mode on one scene; returns N x out_dim float32 unit embeddings."""

    device = device or next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        out = model(
            torch.as_tensor(np.asarray(coords), dtype=torch.int64, device=device),
            torch.as_tensor(np.asarray(feats, dtype=np.float32), device=device),
        )
    return out.cpu().numpy()


def save_student(model: torch.nn.Module, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write a self-describing student file: config + weights + free-form metadata (teacher, data)."""
    model = getattr(model, "module", model)  # the plain module inside a DistributedDataParallel wrapper
    state = {"kind": "ovseg3d_student", "config": model.config.to_dict(), "model": model.state_dict()}
    state["meta"] = dict(meta or {})
    return atomic_torch_save(state, path)


def load_student(path: str | Path | None = None, device: str = "cpu") -> SparseResidualStudent:
    """Load a student saved by :func:`save_student`; ``None`` loads the shipped geometry-only checkpoint."""

    path = student_checkpoint(path)
    if not path.is_file():
        raise StudentCheckpointError(f"student checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, corrupt or foreign files fail inside torch/pickle/zipfile
        raise StudentCheckpointError(f"{path} is not a readable student checkpoint ({type(error).__name__})") from error
    if not isinstance(state, dict) or state.get("kind") != "ovseg3d_student":
        raise StudentCheckpointError(f"{path} is not an ovseg3d student checkpoint")
    model = build_student(StudentConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    model.meta = state.get("meta", {})
    return model.to(device).eval()
