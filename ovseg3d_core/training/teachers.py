"""Distillation teachers: anything that maps a point cloud to per-point embeddings.

GeoPurify distils from Sonata, whose weights (CC-BY-NC) cannot be obtained here, so teachers are
pluggable: every teacher is a callable ``teacher(points, colors=None, normals=None) -> N x E``.
Only *within-scene* similarities matter to the distillation sampler, so a teacher may use a
per-scene projection (the PointNet teacher's PCA) without harming training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ovseg3d_core.config import Config, setting
from ovseg3d_core.encoders.base import WeightsNotFoundError
from ovseg3d_core.encoders.pointnet import load_pointnet_features
from ovseg3d_core.geometry import knn


class TeacherError(ValueError):
    """A teacher got unusable points (empty, mis-shaped, non-finite) or produced a bad embedding."""


class TeacherWeightsError(TeacherError, FileNotFoundError):
    """A learned teacher's weights were not supplied or cannot be read."""


class Teacher(Protocol):
    """Per-point embedding of a scene; rows need not be normalised."""

    def __call__(
        self, points: np.ndarray, colors: np.ndarray | None = None, normals: np.ndarray | None = None
    ) -> np.ndarray: ...


def check_points(points: np.ndarray, colors: np.ndarray | None, normals: np.ndarray | None) -> np.ndarray:
    """Validate the teacher input and return the points as N x 3 float64."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise TeacherError(f"teacher input must be N x 3 points, got shape {points.shape}")
    if len(points) == 0:
        raise TeacherError("teacher input has no points")
    if not np.isfinite(points).all():
        raise TeacherError("teacher input has NaN/inf coordinates")
    for name, arr in (("colors", colors), ("normals", normals)):
        if arr is not None and np.shape(arr) != points.shape:
            raise TeacherError(f"{name} must be {points.shape}, got {np.shape(arr)}")
    return points


def run_teacher(teacher: Callable[..., np.ndarray], points, colors=None, normals=None) -> np.ndarray:
    """Call any teacher and check its output: N x E finite float32 (the sampler relies on that)."""
    points = check_points(points, colors, normals)
    out = np.asarray(teacher(points, colors=colors, normals=normals), dtype=np.float32)
    if out.ndim != 2 or len(out) != len(points):
        raise TeacherError(f"teacher returned shape {out.shape} for {len(points)} points; expected N x E")
    if not np.isfinite(out).all():
        raise TeacherError("teacher returned NaN/inf embeddings")
    return out


@dataclass
class FPFHConfig(Config):
    """Fast Point Feature Histograms (Rusu 2009) as computed by Open3D."""

    normal_radius: float = setting(0.06, "normal estimation radius in metres (3 voxels of 2 cm)", low=1e-4)
    feature_radius: float = setting(0.12, "FPFH neighbourhood radius in metres (6 voxels)", low=1e-4)
    max_nn: int = setting(64, "maximum neighbours per FPFH/normal neighbourhood", low=3, high=1000)
    append_normals: bool = setting(
        False, "append the unit normal to the L2-normalised histogram (36-d 'FPFH + normals' embedding)"
    )


def _estimate_normals(points: np.ndarray, config: FPFHConfig) -> np.ndarray:
    """Open3D PCA normals in ``config``'s normal neighbourhood (for a caller that gives none)."""
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=config.normal_radius, max_nn=config.max_nn))
    return np.asarray(cloud.normals)


class FPFHTeacher:
    """33-d FPFH histograms (or 36-d FPFH + normals): a purely geometric teacher that needs no weights.

    Normals come from the caller when given (e.g. the SceneMap's camera-oriented ones), else from
    Open3D PCA. A point with no neighbour in ``feature_radius`` gets an all-zero histogram.
    FPFH is rotation invariant, so on a flat surface it cannot tell a wall from the floor or a
    table top; appending the normal separates them. As pooling embeddings on ScanNet
    scene0000_00 the histograms alone reach 91.3% affinity purity, with normals 95.0%
    (benchmarks/results/segmentation.md defines purity).
    """

    def __init__(self, config: FPFHConfig | None = None) -> None:
        self.config = config or FPFHConfig()
        self.name = "fpfh_normals" if self.config.append_normals else "fpfh"

    def __call__(
        self, points: np.ndarray, colors: np.ndarray | None = None, normals: np.ndarray | None = None
    ) -> np.ndarray:
        import open3d as o3d

        points = check_points(points, colors, normals)
        cfg = self.config
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
        if normals is None:
            normals = _estimate_normals(points, cfg)
        cloud.normals = o3d.utility.Vector3dVector(np.asarray(normals, dtype=np.float64))
        search = o3d.geometry.KDTreeSearchParamHybrid(radius=cfg.feature_radius, max_nn=cfg.max_nn)
        fpfh = o3d.pipelines.registration.compute_fpfh_feature(cloud, search)
        histograms = np.asarray(fpfh.data, dtype=np.float32).T.copy()
        if not cfg.append_normals:
            return histograms
        unit = np.asarray(cloud.normals, dtype=np.float32)
        unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        histograms /= np.maximum(np.linalg.norm(histograms, axis=1, keepdims=True), 1e-12)
        return np.hstack([histograms, unit])


@dataclass
class PointNetPatchConfig(Config):
    """The ModelNet40 PointNet applied to each point's local patch."""

    weights: str = setting("", "learning3d PointNet feature checkpoint; empty = the shared-data ModelNet40 one")
    patch_points: int = setting(32, "neighbours per patch (including the point itself)", low=4, high=1024)
    out_dim: int = setting(64, "per-scene PCA size of the 1024-d patch features (0 keeps all 1024)", low=0)
    batch_size: int = setting(1024, "patches per PointNet forward", low=1, high=65536)
    max_centres: int = setting(
        8192, "patches are encoded at most at this many random points, others interpolate (0 = every point)", low=0
    )


class PointNetPatchTeacher:
    """A learned teacher from real pretrained weights: PointNet's max-pooled 1024-d global feature
    of each point's k-nearest-neighbour patch (centred on the point, scaled into the unit sphere
    as ModelNet40 shapes are), PCA-reduced per scene so the sampler's similarity search stays cheap.
    """

    name = "pointnet_patch"

    def __init__(self, config: PointNetPatchConfig | None = None) -> None:
        self.config = config or PointNetPatchConfig()
        try:
            self.network = load_pointnet_features(self.config.weights or None)
        except (WeightsNotFoundError, FileNotFoundError) as exc:
            raise TeacherWeightsError(f"PointNet teacher weights unavailable: {exc}") from exc

    def patches(self, points: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """C x k x 3 normalised neighbourhoods of ``centres`` (fewer points than k: the whole scene)."""

        k = min(self.config.patch_points, len(points))
        _, idx = knn(points, k, queries=centres)
        patches = points[idx] - centres[:, None, :]
        radius = np.linalg.norm(patches, axis=2).max(axis=1, keepdims=True)
        return (patches / np.maximum(radius, 1e-9)[:, :, None]).astype(np.float32)

    def __call__(
        self, points: np.ndarray, colors: np.ndarray | None = None, normals: np.ndarray | None = None
    ) -> np.ndarray:
        import torch

        points = check_points(points, colors, normals)
        limit = self.config.max_centres
        centres = points
        if limit and len(points) > limit:
            centres = points[np.sort(np.random.default_rng(0).choice(len(points), limit, replace=False))]
        patches = self.patches(points, centres)
        out = np.empty((len(centres), self.network.emb_dims), dtype=np.float32)
        step = self.config.batch_size
        with torch.inference_mode():
            for start in range(0, len(centres), step):
                batch = torch.from_numpy(patches[start : start + step])
                out[start : start + step] = self.network(batch).amax(dim=1).numpy()
        out = self._reduce(out)
        if centres is points:
            return out
        # Inverse-distance blend of the 3 nearest encoded centres: smooth, and no two points share a row.
        dist, idx = knn(centres, min(3, len(centres)), queries=points)
        weights = 1.0 / np.maximum(dist, 1e-6)
        weights /= weights.sum(axis=1, keepdims=True)
        return np.einsum("nk,nke->ne", weights, out[idx]).astype(np.float32)

    def _reduce(self, features: np.ndarray) -> np.ndarray:
        dim = self.config.out_dim
        if dim == 0 or dim >= features.shape[1] or len(features) <= dim:
            return features
        centred = features - features.mean(axis=0)
        rng = np.random.default_rng(0)
        sample = centred[rng.choice(len(centred), min(len(centred), 20000), replace=False)]
        _, _, vt = np.linalg.svd(sample, full_matrices=False)
        return centred @ vt[:dim].T


class SonataAdapter:
    """Sonata-style learned teacher supplied by the user (its weights cannot be bundled: CC-BY-NC).

    Give either ``model``, any callable ``(coord, color, normal)`` float32 torch tensors (N x 3
    each; colour in [0, 1]) -> N x E tensor, e.g. a thin wrapper around the ``sonata`` package
    that un-pools its output back to the input points, or ``checkpoint``, a ``torch.export``
    program file (``.pt2``, saved with ``torch.export.save``) of a module with that signature and
    a dynamic point count. Normals the caller does not give are estimated as the FPFH teacher's
    are, in ``normal_estimation``'s neighbourhood (its ``normal_radius`` and ``max_nn``).
    """

    name = "sonata"

    def __init__(
        self,
        model: Callable | None = None,
        checkpoint: str | Path | None = None,
        normal_estimation: FPFHConfig | None = None,
    ) -> None:
        self.normal_estimation = normal_estimation or FPFHConfig()
        if model is None and checkpoint is None:
            raise TeacherWeightsError(
                "Sonata weights are not bundled (CC-BY-NC); pass model=<callable> or checkpoint=<torch.export .pt2>"
            )
        if model is None:
            import zipfile

            import torch

            path = Path(checkpoint)
            if not path.is_file():
                raise TeacherWeightsError(f"Sonata checkpoint {path} not found")
            try:
                model = torch.export.load(path).module()
            except (RuntimeError, ValueError, KeyError, OSError, zipfile.BadZipFile) as exc:
                raise TeacherWeightsError(f"{path} is not a torch.export program: {exc}") from exc
        self.model = model

    def __call__(
        self, points: np.ndarray, colors: np.ndarray | None = None, normals: np.ndarray | None = None
    ) -> np.ndarray:
        import torch

        points = check_points(points, colors, normals)
        if colors is None:
            colors = np.zeros_like(points)
        colors = np.asarray(colors)
        colors = colors / 255.0 if colors.dtype == np.uint8 else colors
        if normals is None:
            normals = _estimate_normals(points, self.normal_estimation)
        tensors = [torch.as_tensor(np.asarray(a, dtype=np.float32)) for a in (points, colors, normals)]
        with torch.inference_mode():
            out = self.model(*tensors)
        return np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float32)


TEACHERS: dict[str, Callable[[], Teacher]] = {
    "fpfh": FPFHTeacher,
    "fpfh_normals": lambda: FPFHTeacher(FPFHConfig(append_normals=True)),
    "pointnet_patch": PointNetPatchTeacher,
}
"""Teachers that can be built from a name alone (training configs refer to them by name)."""


def build_teacher(name: str) -> Teacher:
    if name not in TEACHERS:
        raise TeacherError(f"unknown teacher {name!r}; choose one of {sorted(TEACHERS)} or pass a callable")
    return TEACHERS[name]()
