"""One posed RGB-D observation, the unit every loader produces and the scene consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ovseg3d_core.geometry import CameraIntrinsics, GeometryError, validate_pose


@dataclass
class RGBDFrame:
    """A posed RGB-D frame.

    ``color`` is HxWx3 uint8 RGB, ``depth`` HxW float32 metres (0 = invalid), ``pose`` the 4x4
    camera-to-world transform, ``labels`` and ``instances`` optional HxW class-id and object-id
    images aligned with depth (rendered ground truth, read only by the noisy-oracle benchmark
    instrument; ``instances`` < 0 where no object is). :attr:`depth_mm`
    is ``depth`` as the uint16 millimetre image a 16-bit depth sensor delivers.
    """

    color: np.ndarray
    depth: np.ndarray
    intrinsics: CameraIntrinsics
    pose: np.ndarray
    stamp: float = 0.0
    labels: np.ndarray | None = None
    name: str = ""
    instances: np.ndarray | None = None

    @property
    def depth_mm(self) -> np.ndarray:
        """``depth`` as an HxW uint16 millimetre image (depth PNGs, 16UC1 ROS images, 16-bit sensors).

        The encoding is :func:`metres_to_depth_mm`, the one the ROS
        image conversion uses: each valid pixel is ``round(depth * 1000)`` clipped to 1..65534, so
        depths beyond 65.534 m saturate at 65534 (never the 65535 "invalid" marker some datasets
        use) and positive depths under 0.5 mm become 1; invalid pixels (0, NaN, inf, negative) are
        0. Depth already on the millimetre grid within that range (7-Scenes and the other mm-PNG
        loaders, rendered views) round-trips exactly: ``depth_mm_to_metres(frame.depth_mm,
        invalid=None)`` equals ``frame.depth``; other depth (TUM's 1/5000 m units) is rounded.
        Computed on each access (a few ms at 640x480): keep the result to use it repeatedly.
        """
        return metres_to_depth_mm(self.depth)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> RGBDFrame:
        """Raise :class:`GeometryError` if the frame cannot be integrated; returns self.

        Runs when the frame is built (the one boundary every input crosses), so consumers need
        not check again; call it only after changing a frame's arrays in place.
        """
        h, w = self.intrinsics.height, self.intrinsics.width
        if not isinstance(self.depth, np.ndarray) or self.depth.dtype.kind != "f":
            kind = getattr(self.depth, "dtype", type(self.depth).__name__)
            raise GeometryError(f"depth must be float metres, got {kind} (convert millimetres first)")
        if self.depth.ndim != 2 or self.depth.shape != (h, w):
            raise GeometryError(f"depth shape {self.depth.shape} does not match intrinsics {w}x{h}")
        if self.color.shape != (h, w, 3) or self.color.dtype != np.uint8:
            raise GeometryError(f"colour must be {h}x{w}x3 uint8, got {self.color.shape} {self.color.dtype}")
        for what, image in (("label", self.labels), ("instance", self.instances)):
            if image is not None and np.shape(image) != (h, w):
                raise GeometryError(f"{what} image shape {np.shape(image)} does not match depth {(h, w)}")
        self.pose = validate_pose(self.pose)
        return self


def depth_mm_to_metres(raw: np.ndarray, invalid: int | None = 65535, scale: float = 1000.0) -> np.ndarray:
    """Convert integer depth (``scale`` units per metre) to float32 metres; 0 and ``invalid`` become 0."""
    depth = raw.astype(np.float32) / np.float32(scale)
    if invalid is not None:
        depth[raw == invalid] = 0.0
    return depth


def metres_to_depth_mm(depth_m: np.ndarray) -> np.ndarray:
    """Float metres to the uint16 millimetre encoding of depth PNGs and 16UC1 ROS images.

    Invalid (0, NaN, inf, negative) pixels become 0; depths beyond 65.534 m saturate at 65534 so
    they are never confused with the 65535 "invalid" marker some datasets use.
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    millimetres = np.zeros(depth.shape, dtype=np.uint16)
    millimetres[valid] = np.clip(np.rint(depth[valid] * 1000.0), 1, 65534).astype(np.uint16)
    return millimetres
