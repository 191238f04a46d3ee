"""One labeled 3D scan, whichever folder layout it was read from (ScanNet mesh or Pointcept arrays).

Evaluation takes scan folders in either layout and must score them identically, so both loaders
produce this type and nothing downstream needs to know which layout a scan came from. Label
conventions are Pointcept's, the layout most 3D research code reads: :data:`IGNORE_LABEL` (-1)
marks unlabeled points and points of classes outside the benchmark, and instance -1 means "no
object".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_LABEL = -1
NO_INSTANCE = -1


class ScanFormatError(ValueError):
    """A scan folder or file is malformed: missing, inconsistent or out-of-range data."""


@dataclass(eq=False)
class LabeledScan:
    """Per-point arrays of one scan; every array has one row per point.

    ``points`` float32 Nx3 (metres), ``colors`` uint8 Nx3, ``normals`` float32 Nx3 (unit length,
    zero for a mesh vertex on no triangle), ``segment20`` int64 N (index into
    :data:`~ovseg3d_core.data.scenes.scannet.SCANNET20_CLASSES` or -1), ``segment200`` int64 N (index into
    :data:`~ovseg3d_core.data.scenes.scannet.SCANNET200_CLASSES` or -1) or None when the folder has none,
    ``instance`` int64 N (aggregation object id or -1) and ``faces`` int32 Mx3 vertex indices, or
    None for layouts that store no mesh.
    """

    name: str
    points: np.ndarray
    colors: np.ndarray
    normals: np.ndarray
    segment20: np.ndarray
    segment200: np.ndarray | None
    instance: np.ndarray
    faces: np.ndarray | None = None

    @property
    def num_points(self) -> int:
        return len(self.points)
