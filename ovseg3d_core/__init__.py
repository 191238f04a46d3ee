"""ovseg3d core library: open-vocabulary 3D scene segmentation and text-to-shape retrieval.

Pure Python/numpy/torch; never imports rclpy. Heavy modules (torch, open3d) load lazily on
first use so ``import ovseg3d_core`` stays fast.
"""

__version__ = "0.1.0"
