"""sensor_msgs / geometry_msgs <-> numpy conversions; malformed input raises MessageConversionError."""

from ovseg3d_ros.conversions.camera_info import camera_info_to_intrinsics, intrinsics_to_camera_info
from ovseg3d_ros.conversions.errors import MessageConversionError
from ovseg3d_ros.conversions.image import (
    depth_to_image,
    image_to_depth,
    image_to_instances,
    image_to_labels,
    image_to_rgb,
    instances_to_image,
    labels_to_image,
    rgb_to_image,
)
from ovseg3d_ros.conversions.legend import legend_to_msg
from ovseg3d_ros.conversions.pointcloud2 import (
    LabeledCloud,
    cloud_to_structured,
    cloud_to_xyz,
    cloud_to_xyz_rgb,
    labeled_cloud_to_msg,
    pack_rgb,
    read_labeled_cloud,
    structured_to_cloud,
    unpack_rgb,
    xyz_rgb_to_cloud,
)
from ovseg3d_ros.conversions.pose import (
    matrix_to_pose,
    matrix_to_pose_stamped,
    pose_stamped_to_matrix,
    pose_to_matrix,
    transform_to_matrix,
)
from ovseg3d_ros.conversions.stamps import (
    nanoseconds_to_stamp,
    seconds_to_stamp,
    stamp_to_nanoseconds,
    stamp_to_seconds,
)

__all__ = [
    "LabeledCloud",
    "MessageConversionError",
    "camera_info_to_intrinsics",
    "cloud_to_structured",
    "cloud_to_xyz",
    "cloud_to_xyz_rgb",
    "depth_to_image",
    "image_to_depth",
    "image_to_instances",
    "image_to_labels",
    "image_to_rgb",
    "instances_to_image",
    "intrinsics_to_camera_info",
    "labeled_cloud_to_msg",
    "labels_to_image",
    "legend_to_msg",
    "matrix_to_pose",
    "matrix_to_pose_stamped",
    "nanoseconds_to_stamp",
    "pack_rgb",
    "pose_stamped_to_matrix",
    "pose_to_matrix",
    "read_labeled_cloud",
    "rgb_to_image",
    "seconds_to_stamp",
    "stamp_to_nanoseconds",
    "stamp_to_seconds",
    "structured_to_cloud",
    "transform_to_matrix",
    "unpack_rgb",
    "xyz_rgb_to_cloud",
]
