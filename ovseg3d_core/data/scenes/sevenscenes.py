"""Microsoft 7-Scenes in the tsdf-fusion-python layout (``frame-XXXXXX.{color.jpg,depth.png,pose.txt}``).

Depth PNGs are uint16 millimetres with 65535 marking invalid pixels (set to 0, as the tsdf-fusion
demo does); poses are camera-to-world; colour is treated as aligned with depth.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ovseg3d_core.data.root import DataNotFoundError, data_path
from ovseg3d_core.data.scenes.image_io import read_color, read_depth_u16
from ovseg3d_core.frame import RGBDFrame, depth_mm_to_metres
from ovseg3d_core.geometry import CameraIntrinsics, GeometryError, validate_pose

SEVENSCENES_FPS = 30.0  # Kinect v1 rate; gives frames a monotonic stamp.


def read_pose_txt(path: Path) -> np.ndarray:
    """A 4x4 camera-to-world matrix stored as whitespace-separated text, checked to be rigid."""
    try:
        pose = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as error:
        raise GeometryError(f"cannot read pose {path}: {error}") from error
    if pose.shape != (4, 4):
        raise GeometryError(f"pose {path} must hold a 4x4 matrix, got shape {pose.shape}")
    return validate_pose(pose)


class SevenScenes:
    """Indexed access to a 7-Scenes sequence; ``dataset[i]`` reads frame ``i`` from disk on demand."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else data_path("7scenes")
        if not self.root.is_dir():
            raise DataNotFoundError(f"7-Scenes folder {self.root} not found")
        self.frame_names = sorted(p.name[: -len(".pose.txt")] for p in self.root.glob("frame-*.pose.txt"))
        if not self.frame_names:
            raise DataNotFoundError(f"no frame-*.pose.txt files in {self.root}")
        k_path = self.root / "camera-intrinsics.txt"
        if not k_path.is_file():
            raise DataNotFoundError(f"{k_path} not found")
        height, width = read_depth_u16(self.root / f"{self.frame_names[0]}.depth.png").shape
        self.intrinsics = CameraIntrinsics.from_matrix(np.loadtxt(k_path), width, height)

    def __len__(self) -> int:
        return len(self.frame_names)

    def __getitem__(self, index: int) -> RGBDFrame:
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame index {index} out of range for {len(self)} frames")
        index %= len(self)
        name = self.frame_names[index]
        base = self.root / name
        return RGBDFrame(
            color=read_color(base.with_name(f"{name}.color.jpg")),
            depth=depth_mm_to_metres(read_depth_u16(base.with_name(f"{name}.depth.png")), invalid=65535),
            intrinsics=self.intrinsics,
            pose=read_pose_txt(base.with_name(f"{name}.pose.txt")),
            stamp=index / SEVENSCENES_FPS,
            name=name,
        )

    def __iter__(self) -> Iterator[RGBDFrame]:
        for index in range(len(self)):
            yield self[index]

    def poses(self) -> np.ndarray:
        """All camera-to-world poses (Nx4x4) without decoding images."""
        return np.stack([read_pose_txt(self.root / f"{name}.pose.txt") for name in self.frame_names])
