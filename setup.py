"""pip metadata for development installs; on a ROS 2 machine colcon builds via CMakeLists.txt."""

from setuptools import find_packages, setup

setup(
    name="ovseg3d",
    version="0.1.0",
    description="Open-vocabulary 3D scene segmentation (GeoPurify) and text-to-shape retrieval for ROS 2",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["ovseg3d_core", "ovseg3d_core.*", "ovseg3d_ros", "ovseg3d_ros.*"]),
    entry_points={
        "console_scripts": [
            "ovseg3d-bag = ovseg3d_ros.tools.bag:main",
            "ovseg3d-models = ovseg3d_core.encoders.model_files:main",
            "ovseg3d-scan = ovseg3d_core.tools.scan:main",
            "ovseg3d-eval = ovseg3d_core.tools.evaluate:main",
        ],
    },
)
