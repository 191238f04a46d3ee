"""Multi-view 2D -> 3D feature lifting into a :class:`~ovseg3d_core.scene.SceneMap`.

For each keyframe the map's voxels are projected into the depth camera; a voxel takes the
feature of the feature-map pixel its centre lands on (nearest pixel of the H' x W' map, whose
intrinsics are the depth intrinsics rescaled) if it passes the official GeoPurify/OpenScene
visibility test (DESIGN §3): inside the image minus a ``border_px`` margin, in front of the
camera, and ``|depth(u, v) - z| <= occlusion_ratio * depth(u, v)``.

Fusion modes
------------
``mean``
    Running mean over all views that see the voxel (the OpenScene baseline).
``topk_agreement``
    GeoPurify's "top-k views that agree on the consensus class". Each view's feature is
    classified against a fixed class list of its own (``agreement_classes``, cosine similarity to
    their text embeddings; class = argmax, confidence = the winning cosine), independent of the
    labeling vocabulary, so a vocabulary change never touches lifted state. Per voxel we keep: one vote per view
    for its class (``class_votes``, N x C), and a memory of ``topk`` views (feature, class,
    confidence). A new view replaces the memory slot of lowest priority when its own priority
    is higher, where priority = confidence + 2 if the view's class equals the voxel's current
    consensus (majority vote) else confidence, so agreeing views always outrank dissenting ones
    and empty slots rank lowest. The voxel's fused feature is the mean of the remembered views
    of the consensus class (all remembered views if none agrees), written into the map's
    feature accumulator, whose weight counts the views seen. Memory cost: ``topk`` x D values of
    the map's feature dtype per voxel (2 bytes each for the default float16) plus 4 C bytes of votes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ovseg3d_core.config import Config, setting
from ovseg3d_core.data.scenes.scannet import SCANNET20_CLASSES
from ovseg3d_core.frame import RGBDFrame
from ovseg3d_core.geometry import CameraIntrinsics, GeometryError, validate_pose
from ovseg3d_core.jit import parallel_launch
from ovseg3d_core.scene import FLOAT16_MAX, SceneMap

TOPK_FEATURES = "topk_features"
TOPK_CLASSES = "topk_classes"
TOPK_SCORES = "topk_scores"
CLASS_VOTES = "class_votes"
_AGREEMENT_BONUS = 2.0  # > the range of a cosine, so agreement dominates confidence
_TOPK_CHUNK = 8192


@numba.njit(parallel=True, cache=True)
def _project_visible(points, world_to_camera, depth, camera, feature_camera, border, ratio, rows):
    """Per voxel, the feature-map row it reads, or -1 where the visibility test fails.

    One pass, float32 arithmetic in the order of the numpy formulation it replaces (transform,
    perspective divide, round to the nearest pixel); ``camera`` and ``feature_camera`` are
    (fx, fy, cx, cy, width, height) of the depth image and of the feature map.
    """
    fx, fy, cx, cy = camera[0], camera[1], camera[2], camera[3]
    width, height = int(camera[4]), int(camera[5])
    sfx, sfy, scx, scy = feature_camera[0], feature_camera[1], feature_camera[2], feature_camera[3]
    map_width, map_height = int(feature_camera[4]), int(feature_camera[5])
    half = np.float32(0.5)
    r = world_to_camera
    for i in numba.prange(points.shape[0]):
        rows[i] = -1
        px, py, pz = points[i, 0], points[i, 1], points[i, 2]
        z = px * r[2, 0] + py * r[2, 1] + pz * r[2, 2] + r[2, 3]
        if not z > np.float32(1e-6):
            continue
        x = (px * r[0, 0] + py * r[0, 1] + pz * r[0, 2] + r[0, 3]) / z
        y = (px * r[1, 0] + py * r[1, 1] + pz * r[1, 2] + r[1, 3]) / z
        u = np.floor(x * fx + cx + half)
        v = np.floor(y * fy + cy + half)
        if not (u >= border and u < width - border and v >= border and v < height - border):
            continue
        measured = depth[int(v), int(u)]
        if not (measured > 0 and abs(measured - z) <= ratio * measured):
            continue
        fu = min(max(np.floor(x * sfx + scx + half), np.float32(0)), np.float32(map_width - 1))
        fv = min(max(np.floor(y * sfy + scy + half), np.float32(0)), np.float32(map_height - 1))
        rows[i] = int(fv) * map_width + int(fu)


@dataclass
class LiftingConfig(Config):
    """Visibility test and fusion (defaults: GeoPurify's official ScanNet settings)."""

    occlusion_ratio: float = setting(
        0.05, "visible if |depth - z| <= ratio * depth (ScanNet 0.05, Matterport 0.02)", low=0.0, high=1.0
    )
    border_px: int = setting(10, "ignore projections within this many pixels of the depth-image border", low=0)
    fusion: str = setting("mean", "multi-view fusion", choices=("mean", "topk_agreement"))
    topk: int = setting(3, "views remembered per voxel by topk_agreement", low=1, high=32)
    agreement_classes: list[str] = setting(
        list(SCANNET20_CLASSES), "classes topk_agreement votes over (its own list; the labeling vocabulary may change)"
    )

    def validate(self) -> None:
        super().validate()
        if self.fusion == "topk_agreement" and not self.agreement_classes:
            raise GeometryError("topk_agreement fusion needs at least one agreement class")


@dataclass(frozen=True)
class Visibility:
    """Voxels of a map visible in one keyframe and the feature-map pixel each one reads."""

    slots: np.ndarray  # map slots (unique)
    rows: np.ndarray  # flat indices into the H' x W' feature map


class FeatureLifter:
    """Projects 2D feature maps of keyframes into a SceneMap's voxels and fuses them."""

    def __init__(self, config: LiftingConfig | None = None, class_embeddings: np.ndarray | None = None) -> None:
        self.config = config or LiftingConfig()
        self._classes: np.ndarray | None = None
        if class_embeddings is not None:
            self.set_agreement_classes(class_embeddings)

    def set_agreement_classes(self, class_embeddings: np.ndarray) -> None:
        """Text embeddings (C x D) of ``agreement_classes`` the top-k mode votes with; rows are L2-normalised here."""
        classes = np.asarray(class_embeddings, dtype=np.float32)
        if classes.ndim != 2 or len(classes) == 0 or not np.all(np.isfinite(classes)):
            raise GeometryError(f"class embeddings must be a finite non-empty C x D array, got {classes.shape}")
        norms = np.linalg.norm(classes, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise GeometryError("class embeddings contain a zero vector")
        self._classes = classes / norms

    def visible(
        self, scene: SceneMap, depth: np.ndarray, intrinsics: CameraIntrinsics, pose: np.ndarray, map_size: tuple
    ) -> Visibility:
        """Visibility test of DESIGN §3 for every map voxel; ``map_size`` = (H', W') of the feature map."""
        pose = validate_pose(pose)
        depth = np.asarray(depth)
        if depth.dtype.kind != "f":
            raise GeometryError(f"depth must be float metres, got {depth.dtype}")
        if depth.shape != (intrinsics.height, intrinsics.width):
            size = f"{intrinsics.width}x{intrinsics.height}"
            raise GeometryError(f"depth is {depth.shape[::-1]} but intrinsics are {size}")
        if len(scene) == 0:
            return Visibility(np.empty(0, np.int64), np.empty(0, np.int64))
        world_to_camera = np.linalg.inv(pose).astype(np.float32)
        height, width = map_size
        scaled = intrinsics.scaled(width, height)
        depth_camera = (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy, intrinsics.width, intrinsics.height)
        camera = np.array(depth_camera, np.float32)
        feature_camera = np.array([scaled.fx, scaled.fy, scaled.cx, scaled.cy, width, height], np.float32)
        rows = np.empty(len(scene), np.int64)
        with parallel_launch(scene.config.feature_threads):
            _project_visible(
                scene.positions(copy=False),
                world_to_camera,
                depth,
                camera,
                feature_camera,
                np.float32(self.config.border_px),
                depth.dtype.type(self.config.occlusion_ratio),
                rows,
            )
        slots = np.flatnonzero(rows >= 0)
        return Visibility(slots, rows[slots])

    def lift(
        self,
        scene: SceneMap,
        feature_map: np.ndarray,
        depth: np.ndarray,
        intrinsics: CameraIntrinsics,
        pose: np.ndarray,
        valid: np.ndarray | None = None,
    ) -> int:
        """Fuse one keyframe's H' x W' x D feature map (any resolution) into ``scene``.

        ``depth`` (metres, 0 = invalid), ``intrinsics`` and ``pose`` (camera-to-world) are those of
        the depth image the visibility test uses. ``valid`` (H' x W' bool) marks the pixels that
        carry a feature (a 2D model's missed segments do not), so voxels seen only there stay
        unobserved instead of averaging in zeros. Returns the number of voxels updated. Invalid
        input raises :class:`GeometryError` before the map is touched.
        """
        features = np.asarray(feature_map)
        if features.ndim != 3 or features.shape[0] < 1 or features.shape[1] < 1 or features.shape[2] < 1:
            raise GeometryError(f"feature map must be H' x W' x D, got shape {features.shape}")
        if features.dtype.kind != "f":
            raise GeometryError(f"feature map must be floating point, got {features.dtype}")
        high, low = float(features.max()), float(features.min())  # NaN propagates, no temporary copy
        if not (np.isfinite(high) and np.isfinite(low)):
            raise GeometryError("feature map contains NaN or inf")
        if scene.config.feature_dtype == "float16" and max(high, -low) > FLOAT16_MAX:
            raise GeometryError(f"feature magnitude {max(high, -low):.3g} overflows the map's float16 storage")
        if self.config.fusion == "topk_agreement" and self._classes is None:
            raise GeometryError("topk_agreement fusion has no class embeddings: set_agreement_classes first")
        if self.config.fusion == "topk_agreement" and self._classes.shape[1] != features.shape[2]:
            raise GeometryError(f"feature dim {features.shape[2]} != class embedding dim {self._classes.shape[1]}")
        if valid is not None:
            valid = np.asarray(valid)
            if valid.shape != features.shape[:2] or valid.dtype != bool:
                raise GeometryError(
                    f"valid mask must be a {features.shape[:2]} bool array, got {valid.shape} {valid.dtype}"
                )
        visibility = self.visible(scene, depth, intrinsics, pose, features.shape[:2])
        if valid is not None:
            keep = valid.reshape(-1)[visibility.rows]
            visibility = Visibility(visibility.slots[keep], visibility.rows[keep])
        source = features.reshape(-1, features.shape[2])
        if self.config.fusion == "mean":
            scene.accumulate_features(visibility.slots, source, visibility.rows)
        else:
            self._fuse_topk(scene, source, visibility)
        return len(visibility.slots)

    def lift_frame(self, scene: SceneMap, feature_map: np.ndarray, frame: RGBDFrame) -> int:
        """:meth:`lift` with the depth, intrinsics and pose of an :class:`RGBDFrame`."""
        return self.lift(scene, feature_map, frame.depth, frame.intrinsics, frame.pose)

    def _fuse_topk(self, scene: SceneMap, source: np.ndarray, visibility: Visibility) -> None:
        classes = self._classes
        k, dim, n_classes = self.config.topk, source.shape[1], len(classes)
        memory = scene.channel(TOPK_FEATURES, (k, dim), np.dtype(scene.config.feature_dtype))
        memory_classes = scene.channel(TOPK_CLASSES, (k,), np.int32, fill=-1)
        memory_scores = scene.channel(TOPK_SCORES, (k,), np.float32)
        votes = scene.channel(CLASS_VOTES, (n_classes,), np.float32)
        for start in range(0, len(visibility.slots), _TOPK_CHUNK):
            slots = visibility.slots[start : start + _TOPK_CHUNK]
            view = source[visibility.rows[start : start + _TOPK_CHUNK]].astype(np.float32)
            norms = np.linalg.norm(view, axis=1)
            cosine = (view @ classes.T) / np.maximum(norms, 1e-12)[:, None]
            label = cosine.argmax(axis=1)
            score = cosine[np.arange(len(slots)), label]
            slot_votes = votes[slots]
            slot_votes[np.arange(len(slots)), label] += 1
            votes[slots] = slot_votes
            consensus = slot_votes.argmax(axis=1)

            kept_classes, kept_scores = memory_classes[slots], memory_scores[slots]
            priority = np.where(
                kept_classes < 0, -np.inf, kept_scores + _AGREEMENT_BONUS * (kept_classes == consensus[:, None])
            )
            new_priority = score + _AGREEMENT_BONUS * (label == consensus)
            weakest = priority.argmin(axis=1)
            take = new_priority > priority[np.arange(len(slots)), weakest]
            rows, columns = slots[take], weakest[take]
            memory[rows, columns] = view[take]
            memory_classes[rows, columns] = label[take]
            memory_scores[rows, columns] = score[take]

            kept_classes = memory_classes[slots]
            agree = kept_classes == consensus[:, None]
            use = np.where(agree.any(axis=1, keepdims=True), agree, kept_classes >= 0).astype(np.float32)
            fused = np.einsum("nk,nkd->nd", use, memory[slots].astype(np.float32)) / use.sum(axis=1, keepdims=True)
            scene.set_features(slots, fused, slot_votes.sum(axis=1))
