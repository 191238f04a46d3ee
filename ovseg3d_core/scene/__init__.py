"""The robot's voxel map of the scene: :class:`SceneMap` (storage, integration, eviction, change
tracking) in :mod:`.map`, over its tunables (:mod:`.config`), local normals (:mod:`.normals`), PLY
export (:mod:`.ply`) and the versioned file format (:mod:`.storage`); none of those imports :mod:`.map`."""

from ovseg3d_core.scene.config import FLOAT16_MAX, SceneConfig
from ovseg3d_core.scene.map import SceneMap, SkippedFrameWarning
from ovseg3d_core.scene.storage import FORMAT_VERSION, SceneFormatError

__all__ = [
    "FLOAT16_MAX",
    "FORMAT_VERSION",
    "SceneConfig",
    "SceneFormatError",
    "SceneMap",
    "SkippedFrameWarning",
]
