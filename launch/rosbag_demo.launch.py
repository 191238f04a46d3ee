"""Replay an ovseg3d bag (``ovseg3d-bag write``) in a loop into the nodes, with RViz showing the labeled cloud.

ros2 launch ovseg3d_ros rosbag_demo.launch.py bag:=/path/to/bag checkpoint:=/path/to/ViT-B-16.pt

The demo bag (rendered ScanNet views) also carries semantic/image, so ``backend:=noisy_oracle``
replays it through the benchmark instrument instead of a model.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("ovseg3d_ros")
    bag, rate = LaunchConfiguration("bag"), LaunchConfiguration("rate")
    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", description="bag folder written by ovseg3d-bag write"),
            DeclareLaunchArgument("rate", default_value="1.0", description="playback speed factor"),
            DeclareLaunchArgument(
                "backend", default_value="openclip", description="2D feature source: openclip or noisy_oracle"
            ),
            DeclareLaunchArgument("checkpoint", default_value="", description="local OpenCLIP weights file"),
            DeclareLaunchArgument("rviz", default_value="true", description="start RViz"),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "ovseg3d.launch.py"])),
                launch_arguments={
                    "backend": LaunchConfiguration("backend"),
                    "checkpoint": LaunchConfiguration("checkpoint"),
                    "world_frame": "map",
                }.items(),
            ),
            Node(
                package="ovseg3d_ros",
                executable="ovseg3d-bag",
                name="bag_player",
                arguments=["play", bag, "--rate", rate, "--loop", "--wait-for-subscribers", "30"],
                output="screen",
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz",
                arguments=["-d", PathJoinSubstitution([share, "config", "ovseg3d.rviz"])],
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )
