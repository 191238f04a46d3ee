"""ovseg3d core library: open-vocabulary 3D scene segmentation and text-to-shape retrieval.

Pure Python/numpy/torch; never imports rclpy. The names below are the public surface::

    from ovseg3d_core import SceneSegmenter, SegmenterConfig, SevenScenes

    segmenter = SceneSegmenter(SegmenterConfig.from_yaml("my_config.yaml"))
    for frame in SevenScenes():
        segmenter.add_frame(frame)
    labeling = segmenter.label(["chair", "something to sit on"])

Each name loads its module on first use (PEP 562), so ``import ovseg3d_core`` stays cheap:
torch, open3d and spconv load only with the modules that need them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    # segmentation: the segmenter, its live-stream driver and their configs
    "SceneSegmenter": "ovseg3d_core.segmenter",
    "SegmenterConfig": "ovseg3d_core.segmenter",
    "OnlineSegmenter": "ovseg3d_core.online",
    "OnlineSegmenterConfig": "ovseg3d_core.online",
    # input: one posed RGB-D frame, and the loaders that make them or labelled scans
    "RGBDFrame": "ovseg3d_core.frame",
    "CameraIntrinsics": "ovseg3d_core.geometry",
    "SevenScenes": "ovseg3d_core.data.scenes.sevenscenes",
    "RedwoodSequence": "ovseg3d_core.data.scenes.redwood",
    "load_scannet_scan": "ovseg3d_core.data.scenes.scannet",
    "load_scan": "ovseg3d_core.data.scenes.scan_layouts",
    # retrieval: text -> shapes
    "ShapeDatabase": "ovseg3d_core.retrieval.database",
    "ShapeDatabaseConfig": "ovseg3d_core.retrieval.database",
}

__all__ = [
    "CameraIntrinsics",
    "OnlineSegmenter",
    "OnlineSegmenterConfig",
    "RGBDFrame",
    "RedwoodSequence",
    "SceneSegmenter",
    "SegmenterConfig",
    "SevenScenes",
    "ShapeDatabase",
    "ShapeDatabaseConfig",
    "load_scan",
    "load_scannet_scan",
]

if TYPE_CHECKING:
    from ovseg3d_core.data.scenes.redwood import RedwoodSequence
    from ovseg3d_core.data.scenes.scan_layouts import load_scan
    from ovseg3d_core.data.scenes.scannet import load_scannet_scan
    from ovseg3d_core.data.scenes.sevenscenes import SevenScenes
    from ovseg3d_core.frame import RGBDFrame
    from ovseg3d_core.geometry import CameraIntrinsics
    from ovseg3d_core.online import OnlineSegmenter, OnlineSegmenterConfig
    from ovseg3d_core.retrieval.database import ShapeDatabase, ShapeDatabaseConfig
    from ovseg3d_core.segmenter import SceneSegmenter, SegmenterConfig


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'ovseg3d_core' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
