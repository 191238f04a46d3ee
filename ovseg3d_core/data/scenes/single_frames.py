"""Single RGB-D frames in the TUM, SUN RGB-D and NYU Depth v2 encodings (``open3d_rgbd/other_formats``).

Each loads as an :class:`RGBDFrame` with an identity pose. None of the samples ships its camera, so
the intrinsics are the published defaults of the sensor family (all 640x480):

- TUM RGB-D: fx = fy = 525, cx = 319.5, cy = 239.5 (TUM's documented default for its ROS data,
  also Open3D's ``PrimeSenseDefault``).
- SUN RGB-D: the same PrimeSense default (Open3D's SUN tutorial uses it; SUN's Kinect v1 / Xtion
  frames have focal lengths within a few percent of it).
- NYU Depth v2: the colour camera (depth is registered to it) of the NYU toolbox ``camera_params.m``:
  fx = 518.8579, fy = 519.4696, cx = 325.5824, cy = 253.7362.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ovseg3d_core.data.root import DataNotFoundError, data_path
from ovseg3d_core.data.scenes.image_io import ImageFormatError, read_color, read_depth_u16
from ovseg3d_core.frame import RGBDFrame, depth_mm_to_metres
from ovseg3d_core.geometry import CameraIntrinsics

PRIMESENSE_DEFAULT = CameraIntrinsics(525.0, 525.0, 319.5, 239.5, 640, 480)
NYU_COLOR_CAMERA = CameraIntrinsics(518.8579, 519.4696, 325.5824, 253.7362, 640, 480)

TUM_DEPTH_SCALE = 5000.0  # TUM stores depth as uint16 with 5000 units per metre.
NYU_MAX_DEPTH_M = 10.0  # Kinect v1 disparity conversion is meaningless beyond this (and at raw >= 1092.5).


def decode_tum_depth(raw: np.ndarray) -> np.ndarray:
    """TUM uint16 depth (5000 = 1 m, 0 = invalid) to float32 metres."""
    return depth_mm_to_metres(raw, invalid=None, scale=TUM_DEPTH_SCALE)


def decode_sun_depth(raw: np.ndarray) -> np.ndarray:
    """SUN RGB-D uint16 depth: rotate the 16 bits right by 3 to get millimetres, then metres."""
    raw = np.asarray(raw, dtype=np.uint16)
    millimetres = (raw >> 3) | (raw << 13)
    return depth_mm_to_metres(millimetres, invalid=None)


def decode_nyu_depth(raw: np.ndarray) -> np.ndarray:
    """NYU raw depth as read from its PGM (big-endian per the Netpbm spec) to float32 metres.

    NYU's dumps hold little-endian Kinect disparities in a nominally big-endian PGM, so the toolbox
    (``swapbytes``) and Open3D's ``create_from_nyu_format`` swap the two bytes first; the disparity
    (0..2047, 2047 = no return) then converts as 351.3 / (1092.5 - d). Invalid or far pixels become 0.
    """
    raw = np.asarray(raw, dtype=np.uint16).byteswap().astype(np.float32)
    with np.errstate(divide="ignore"):
        depth = np.float32(351.3) / (np.float32(1092.5) - raw)
    depth[~np.isfinite(depth) | (depth <= 0) | (depth > NYU_MAX_DEPTH_M)] = 0.0
    return depth.astype(np.float32)


def read_pgm16(path: Path) -> np.ndarray:
    """A binary (P5) PGM with 16-bit samples, decoded big-endian as the Netpbm spec says."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"PGM {path} not found")
    buffer = path.read_bytes()
    header = re.match(rb"P5\s+(?:#[^\n]*\n\s*)*(\d+)\s+(\d+)\s+(\d+)\s", buffer)
    if header is None:
        raise ImageFormatError(f"{path} is not a binary P5 PGM")
    width, height, max_value = (int(g) for g in header.groups())
    if max_value < 256:
        raise ImageFormatError(f"{path} has 8-bit samples (maxval {max_value}), expected 16-bit")
    body = buffer[header.end() :]
    if len(body) < width * height * 2:
        raise ImageFormatError(f"{path} is truncated: {len(body)} bytes for {width}x{height} 16-bit samples")
    return np.frombuffer(body, dtype=">u2", count=width * height).reshape(height, width).astype(np.uint16)


def _frame(color: np.ndarray, depth: np.ndarray, intrinsics: CameraIntrinsics, name: str) -> RGBDFrame:
    return RGBDFrame(color=color, depth=depth, intrinsics=intrinsics, pose=np.eye(4), name=name)


def _folder(root: Path | None) -> Path:
    return Path(root) if root is not None else data_path("open3d_rgbd", "other_formats")


def load_tum_frame(root: Path | None = None) -> RGBDFrame:
    folder = _folder(root)
    depth = decode_tum_depth(read_depth_u16(folder / "TUM_depth.png"))
    return _frame(read_color(folder / "TUM_color.png"), depth, PRIMESENSE_DEFAULT, "TUM")


def load_sun_frame(root: Path | None = None) -> RGBDFrame:
    folder = _folder(root)
    depth = decode_sun_depth(read_depth_u16(folder / "SUN_depth.png"))
    return _frame(read_color(folder / "SUN_color.jpg"), depth, PRIMESENSE_DEFAULT, "SUN")


def load_nyu_frame(root: Path | None = None) -> RGBDFrame:
    folder = _folder(root)
    depth = decode_nyu_depth(read_pgm16(folder / "NYU_depth.pgm"))
    return _frame(read_color(folder / "NYU_color.ppm"), depth, NYU_COLOR_CAMERA, "NYU")


SINGLE_FRAME_LOADERS = {"tum": load_tum_frame, "sun": load_sun_frame, "nyu": load_nyu_frame}
