"""One posed RGB-D observation, the unit every loader produces and the scene consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ovseg3d_core.geometry import CameraIntrinsics, GeometryError, validate_pose


@dataclass
class RGBDFrame:
    """A posed RGB-D frame.

    ``color`` is HxWx3 uint8 RGB, ``depth`` HxW float32 metres (0 = invalid), ``pose`` the 4x4
    camera-to-world transform, ``labels`` an optional HxW class-id image aligned with depth
    (rendered ground truth, used only by the noisy-oracle benchmark source).
    """

    color: np.ndarray
    depth: np.ndarray
    intrinsics: CameraIntrinsics
    pose: np.ndarray
    stamp: float = 0.0
    labels: np.ndarray | None = None
    name: str = ""

    def validate(self) -> RGBDFrame:
        """Raise :class:`GeometryError` if the frame cannot be integrated; returns self."""
        h, w = self.intrinsics.height, self.intrinsics.width
        if self.depth.ndim != 2 or self.depth.shape != (h, w):
            raise GeometryError(f"depth shape {self.depth.shape} does not match intrinsics {w}x{h}")
        if self.color.shape != (h, w, 3) or self.color.dtype != np.uint8:
            raise GeometryError(f"colour must be {h}x{w}x3 uint8, got {self.color.shape} {self.color.dtype}")
        if self.labels is not None and self.labels.shape != (h, w):
            raise GeometryError(f"label image shape {self.labels.shape} does not match depth {(h, w)}")
        self.pose = validate_pose(self.pose)
        return self
