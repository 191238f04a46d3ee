"""pip metadata for development installs; on a ROS 2 machine colcon builds via CMakeLists.txt."""

from setuptools import setup

setup(
    name="ovseg3d",
    version="0.1.0",
    description="Open-vocabulary 3D scene segmentation (GeoPurify) and text-to-shape retrieval for ROS 2",
    license="MIT",
    python_requires=">=3.10",
    packages=[
        "ovseg3d_core",
        "ovseg3d_core.data",
        "ovseg3d_core.encoders",
        "ovseg3d_core.metrics",
        "ovseg3d_core.purify",
        "ovseg3d_core.retrieval",
        "ovseg3d_core.viz",
        "ovseg3d_ros",
    ],
    entry_points={
        "console_scripts": [
            "ovseg3d-bag = ovseg3d_ros.bag_tools:main",
        ],
    },
)
