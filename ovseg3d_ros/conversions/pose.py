"""geometry_msgs Pose / PoseStamped / Transform <-> 4x4 rigid transforms (quaternions are x, y, z, w as in ROS)."""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion, Transform
from scipy.spatial.transform import Rotation
from std_msgs.msg import Header

from ovseg3d_core.geometry import GeometryError, validate_pose
from ovseg3d_ros.conversions.errors import MessageConversionError

QUATERNION_NORM_TOLERANCE = 1e-3


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """4x4 float64 transform; the quaternion must be unit length (within 1e-3) and finite."""
    position = np.array([pose.position.x, pose.position.y, pose.position.z], dtype=np.float64)
    quaternion = np.array(
        [pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w], dtype=np.float64
    )
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(quaternion))):
        raise MessageConversionError("pose contains NaN or inf")
    norm = np.linalg.norm(quaternion)
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise MessageConversionError(f"pose orientation is not a unit quaternion (norm {norm:.6f})")
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_quat(quaternion / norm).as_matrix()
    matrix[:3, 3] = position
    return matrix


def matrix_to_pose(matrix: np.ndarray) -> Pose:
    try:
        matrix = validate_pose(matrix)
    except GeometryError as error:
        raise MessageConversionError(f"cannot convert to a Pose: {error}") from error
    x, y, z, w = Rotation.from_matrix(matrix[:3, :3]).as_quat()
    tx, ty, tz = (float(v) for v in matrix[:3, 3])
    return Pose(
        position=Point(x=tx, y=ty, z=tz), orientation=Quaternion(x=float(x), y=float(y), z=float(z), w=float(w))
    )


def pose_stamped_to_matrix(msg: PoseStamped) -> np.ndarray:
    return pose_to_matrix(msg.pose)


def transform_to_matrix(transform: Transform) -> np.ndarray:
    """4x4 float64 transform of a TF transform (translation + rotation), checked like a pose."""
    t = transform.translation
    return pose_to_matrix(Pose(position=Point(x=t.x, y=t.y, z=t.z), orientation=transform.rotation))


def matrix_to_pose_stamped(matrix: np.ndarray, header: Header) -> PoseStamped:
    return PoseStamped(header=header, pose=matrix_to_pose(matrix))
