"""The Redwood-format RGB-D sequence shipped with Open3D's test data (``open3d_rgbd/``).

``rgbd.match`` pairs depth and colour images, ``trajectory.log`` holds one camera-to-world matrix
per frame (Redwood ``.log``: a line ``id id n`` then four matrix rows), ``camera_primesense.json``
holds Open3D pinhole intrinsics with the 3x3 matrix stored column-major. Depth is uint16 mm.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ovseg3d_core.data.root import DataNotFoundError, data_path
from ovseg3d_core.data.scenes.image_io import read_color, read_depth_u16
from ovseg3d_core.frame import RGBDFrame, depth_mm_to_metres
from ovseg3d_core.geometry import CameraIntrinsics, GeometryError, validate_pose

REDWOOD_FPS = 30.0


class RedwoodFormatError(ValueError):
    """A Redwood ``.log``, ``.match`` or camera file is malformed."""


def read_trajectory_log(path: Path) -> list[np.ndarray]:
    """Camera-to-world 4x4 poses from a Redwood ``.log`` file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"trajectory {path} not found")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if len(rows) % 5:
        raise RedwoodFormatError(f"{path}: {len(rows)} non-empty lines is not a multiple of 5 (header + 4 rows)")
    poses = []
    for start in range(0, len(rows), 5):
        try:
            matrix = np.array(rows[start + 1 : start + 5], dtype=np.float64)
        except ValueError as error:
            raise RedwoodFormatError(f"{path}: entry at line {start + 1} is not numeric: {error}") from error
        if matrix.shape != (4, 4):
            raise RedwoodFormatError(f"{path}: entry at line {start + 1} is not a 4x4 matrix")
        poses.append(validate_pose(matrix))
    return poses


def read_open3d_intrinsics(path: Path) -> CameraIntrinsics:
    """Intrinsics from an Open3D ``PinholeCameraIntrinsic`` json (column-major ``intrinsic_matrix``)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"camera file {path} not found")
    try:
        spec = json.loads(path.read_text())
        k = np.asarray(spec["intrinsic_matrix"], dtype=np.float64).reshape(3, 3, order="F")
        return CameraIntrinsics.from_matrix(k, int(spec["width"]), int(spec["height"]))
    except (KeyError, ValueError, TypeError) as error:
        if isinstance(error, GeometryError):
            raise
        raise RedwoodFormatError(f"{path}: not an Open3D pinhole camera json: {error}") from error


def read_rgbd_match(path: Path) -> list[tuple[str, str]]:
    """(depth, colour) relative paths, one pair per line of ``rgbd.match``."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"match file {path} not found")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise RedwoodFormatError(f"{path}:{number}: expected 'depth colour', got {line!r}")
        pairs.append((fields[0], fields[1]))
    return pairs


class RedwoodSequence:
    """Posed frames of a Redwood-format folder; ``trajectory`` picks ``trajectory.log`` or ``odometry.log``."""

    def __init__(
        self,
        root: Path | None = None,
        trajectory: str = "trajectory.log",
        camera: Path | None = None,
    ) -> None:
        self.root = Path(root) if root is not None else data_path("open3d_rgbd")
        self.pairs = read_rgbd_match(self.root / "rgbd.match")
        self.poses = read_trajectory_log(self.root / trajectory)
        if len(self.poses) != len(self.pairs):
            raise RedwoodFormatError(f"{trajectory} has {len(self.poses)} poses but rgbd.match {len(self.pairs)} pairs")
        self.intrinsics = read_open3d_intrinsics(Path(camera) if camera else self.root / "camera_primesense.json")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> RGBDFrame:
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame index {index} out of range for {len(self)} frames")
        index %= len(self)
        depth_name, color_name = self.pairs[index]
        return RGBDFrame(
            color=read_color(self.root / color_name),
            depth=depth_mm_to_metres(read_depth_u16(self.root / depth_name), invalid=None),
            intrinsics=self.intrinsics,
            pose=self.poses[index],
            stamp=index / REDWOOD_FPS,
            name=Path(color_name).stem,
        )

    def __iter__(self) -> Iterator[RGBDFrame]:
        for index in range(len(self)):
            yield self[index]
