"""sensor_msgs/CameraInfo <-> ``ovseg3d_core.geometry.CameraIntrinsics``.

Images are assumed rectified (the core's pinhole model has no distortion): only ``k``, ``width`` and
``height`` are read. An all-zero ``k`` is what an uncalibrated driver publishes; it is rejected.
"""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from ovseg3d_core.geometry import CameraIntrinsics, GeometryError
from ovseg3d_ros.conversions.errors import MessageConversionError


def camera_info_to_intrinsics(msg: CameraInfo) -> CameraIntrinsics:
    k = np.asarray(msg.k, dtype=np.float64)
    if k.size != 9:
        raise MessageConversionError(f"CameraInfo.k must have 9 entries, got {k.size}")
    if not np.any(k):
        raise MessageConversionError("CameraInfo.k is all zeros (uncalibrated camera)")
    try:
        return CameraIntrinsics.from_matrix(k.reshape(3, 3), int(msg.width), int(msg.height))
    except GeometryError as error:
        raise MessageConversionError(f"invalid CameraInfo: {error}") from error


def intrinsics_to_camera_info(intrinsics: CameraIntrinsics, header: Header) -> CameraInfo:
    """A rectified, distortion-free CameraInfo (``p`` = [K | 0], ``r`` = identity)."""
    k = intrinsics.matrix
    p = np.zeros((3, 4), dtype=np.float64)
    p[:, :3] = k
    return CameraInfo(
        header=header,
        width=intrinsics.width,
        height=intrinsics.height,
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=k.reshape(-1),
        r=np.eye(3).reshape(-1),
        p=p.reshape(-1),
    )
