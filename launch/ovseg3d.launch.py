"""Launch scene_node (+ retrieval_node) on a robot's RGB-D topics.

    ros2 launch ovseg3d_ros ovseg3d.launch.py rgb_topic:=/camera/color/image_raw \
        depth_topic:=/camera/aligned_depth_to_color/image_raw camera_info_topic:=/camera/color/camera_info \
        checkpoint:=/path/to/ViT-B-16.pt world_frame:=map

Without a checkpoint scene_node maps geometry only (README "Model weights").
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from ovseg3d_ros.fastdds_profile import profile_variable

ARGUMENTS = {
    "params_file": ("", "parameter YAML (default: the package's config/ovseg3d.yaml)"),
    "world_frame": ("map", "fixed frame of the map, poses and clouds"),
    "backend": (
        "openclip",
        "2D feature source: openclip, or noisy_oracle (benchmark instrument, reads semantic/image)",
    ),
    "checkpoint": ("", "local OpenCLIP weights file; empty = map geometry only until one is set"),
    "rgb_topic": ("rgb/image", "colour image topic (rgb8/bgr8)"),
    "depth_topic": ("depth/image", "depth image topic (16UC1 mm or 32FC1 m), aligned with colour"),
    "camera_info_topic": ("rgb/camera_info", "CameraInfo of the colour/depth image"),
    "pose_topic": ("camera_pose", "PoseStamped world <- camera optical frame (preferred; TF serves frames it lacks)"),
    "points_topic": ("points", "optional PointCloud2 (x, y, z, rgb) in world_frame"),
    "semantic_topic": ("semantic/image", "ground-truth class ids, read only by the noisy_oracle backend"),
    "instance_topic": ("instance/image", "ground-truth object ids, read only by the noisy_oracle's per-object errors"),
    "retrieval": ("true", "also start retrieval_node"),
}


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("ovseg3d_ros")
    config = {name: LaunchConfiguration(name) for name in ARGUMENTS}
    params_file = PythonExpression(
        ["'", config["params_file"], "' or '", PathJoinSubstitution([share, "config", "ovseg3d.yaml"]), "'"]
    )
    scene_node = Node(
        package="ovseg3d_ros",
        executable="scene_node",
        name="scene_node",
        output="screen",
        parameters=[
            params_file,
            {
                "world_frame": config["world_frame"],
                "segmenter.encoders.dense": config["backend"],
                "segmenter.encoders.checkpoint": config["checkpoint"],
            },
        ],
        remappings=[
            ("rgb/image", config["rgb_topic"]),
            ("depth/image", config["depth_topic"]),
            ("rgb/camera_info", config["camera_info_topic"]),
            ("camera_pose", config["pose_topic"]),
            ("points", config["points_topic"]),
            ("semantic/image", config["semantic_topic"]),
            ("instance/image", config["instance_topic"]),
        ],
    )
    retrieval_node = Node(
        package="ovseg3d_ros",
        executable="retrieval_node",
        name="retrieval_node",
        output="screen",
        parameters=[params_file],
        condition=IfCondition(config["retrieval"]),
    )
    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGUMENTS.items()
            ),
            # The shipped large-message profile, unless the user chose one (as ovseg3d_ros.fastdds_profile
            # does), in the variable this ROS distribution's Fast DDS reads.
            SetEnvironmentVariable(
                profile_variable(),
                EnvironmentVariable(
                    profile_variable(),
                    default_value=PathJoinSubstitution([share, "config", "fastdds_profile.xml"]),
                ),
            ),
            scene_node,
            retrieval_node,
        ]
    )
