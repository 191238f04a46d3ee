"""Per-point predictions of a scan from a voxel map, for scoring every labelled point of the scan.

The official evaluations (ScanNet's script, GeoPurify's validation) score every vertex of the
scan; scoring the map's voxels instead lets points the camera never saw drop out of the score. A
point takes the label of the nearest observed voxel (one a 2D feature reached) within one voxel
edge; a point farther from every observed voxel, for instance in a voxel whose label was only
propagated from neighbours, gets :data:`NO_CLASS`, which
:func:`~ovseg3d_core.metrics.segmentation.confusion_matrix` counts as a miss for its true class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ovseg3d_core.data.scenes.scannet import IGNORE_INDEX
from ovseg3d_core.metrics.segmentation import MetricsError

if TYPE_CHECKING:
    from ovseg3d_core.scene import SceneMap

NO_CLASS = -1


@dataclass(frozen=True)
class ScanPointLabels:
    """Per-point labels (``NO_CLASS`` where unobserved) and the mask of points a 2D feature reached."""

    labels: np.ndarray
    observed: np.ndarray

    def unobserved_labelled(self, ground_truth: np.ndarray, ignore_index: int = IGNORE_INDEX) -> int:
        """Labelled points that count as misses because the map never observed them."""
        return int(((np.asarray(ground_truth) != ignore_index) & ~self.observed).sum())


def scan_point_labels(
    scene: SceneMap, points: np.ndarray, voxel_labels: np.ndarray, tolerance: float | None = None
) -> ScanPointLabels:
    """Label of each scan point from ``voxel_labels`` (one per map slot), ``NO_CLASS`` where unobserved.

    A point takes the label of the nearest observed voxel whose centre lies within ``tolerance``
    metres (default: one voxel edge). A point inside an observed voxel is always within reach of
    its own centre; the tolerance also covers a surface point that falls just across a voxel
    boundary from the samples the camera saw (depth is sampled on a pixel grid, so a scan vertex can
    sit in a voxel no depth sample landed in). Points farther away were never observed: misses.
    """
    from scipy.spatial import cKDTree

    points = np.asarray(points, dtype=np.float64)
    voxel_labels = np.asarray(voxel_labels)
    if points.ndim != 2 or points.shape[1] != 3:
        raise MetricsError(f"points must be N x 3, got shape {points.shape}")
    if voxel_labels.shape != (len(scene),):
        raise MetricsError(f"{voxel_labels.shape[0] if voxel_labels.ndim else 0} voxel labels for {len(scene)} voxels")
    tolerance = scene.voxel_size if tolerance is None else float(tolerance)
    labels = np.full(len(points), NO_CLASS, dtype=np.int64)
    observed = np.zeros(len(points), dtype=bool)
    seen = np.flatnonzero(scene.feature_weights() > 0)
    if len(seen) and len(points):
        distance, nearest = cKDTree(scene.positions()[seen]).query(points, distance_upper_bound=tolerance)
        observed = np.isfinite(distance)
        labels[observed] = voxel_labels[seen[nearest[observed]]]
    return ScanPointLabels(labels=labels, observed=observed)
