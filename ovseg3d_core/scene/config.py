"""Tunables of the voxel map, apart from :class:`SceneMap` so the file format can read them too."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ovseg3d_core.config import Config, setting
from ovseg3d_core.geometry import GeometryError

FLOAT16_MAX = float(np.finfo(np.float16).max)
"""Largest feature value the default float16 storage holds (lifting checks its inputs against it)."""


@dataclass
class SceneConfig(Config):
    """Tunables of the voxel map (defaults: GeoPurify's 2 cm voxels, Kinect-range depth)."""

    voxel_size: float = setting(0.02, "voxel edge length in metres", low=0.001, high=1.0)
    max_voxels: int = setting(2_000_000, "voxel cap; least recently seen voxels are evicted beyond it", low=1)
    eviction_headroom: float = setting(
        0.1, "fraction of the cap freed by one eviction, so compaction is rare", low=0.0, high=0.9
    )
    depth_min: float = setting(0.1, "depth below this (metres) is ignored", low=0.0, high=100.0)
    depth_max: float = setting(5.0, "depth beyond this (metres) is ignored (truncation)", low=0.01, high=100.0)
    pixel_stride: int = setting(
        0, "integrate every n-th pixel; 0 = automatic from the voxel footprint at the median depth", low=0, high=64
    )
    samples_per_voxel: float = setting(
        2.0, "automatic stride keeps this many pixel samples per voxel edge at the median depth", low=0.5, high=16.0
    )
    min_valid_pixels: int = setting(100, "frames with fewer valid depth pixels are skipped with a warning", low=1)
    feature_dim: int = setting(0, "feature dimension D; 0 = taken from the first lifted feature map", low=0)
    feature_dtype: str = setting("float16", "storage of the per-voxel mean feature", choices=("float16", "float32"))
    feature_threads: int = setting(0, "threads of the compiled feature update (lifting); 0 = all cores", low=0)
    normal_max_nn: int = setting(30, "neighbours used for PCA normal estimation", low=3, high=200)
    normal_radius_voxels: float = setting(3.0, "PCA normal neighbourhood radius, in voxels", low=1.0, high=20.0)

    def validate(self) -> None:
        super().validate()
        if self.depth_max <= self.depth_min:
            raise GeometryError(f"depth_max {self.depth_max} must exceed depth_min {self.depth_min}")
