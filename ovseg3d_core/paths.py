"""Where ovseg3d finds its shipped checkpoints and keeps its caches, in a source checkout or a colcon install.

colcon installs the Python sources into ``<prefix>/lib/.../site-packages`` (possibly read-only) and
the checkpoints into ``<prefix>/share/ovseg3d_ros/checkpoints`` (CMakeLists.txt). The library stays
ROS-free, so the share directory is found relative to this file rather than through ament_index.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "OVSEG3D_CACHE"
PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent  # the repository root in a checkout; site-packages in an install


def shipped_checkpoints() -> Path:
    """``training/checkpoints`` of the checkout, else ``share/ovseg3d_ros/checkpoints`` of the install prefix."""
    candidates = [SOURCE_ROOT / "training" / "checkpoints"]
    candidates += [prefix / "share" / "ovseg3d_ros" / "checkpoints" for prefix in PACKAGE_DIR.parents]
    return next((path for path in candidates if path.is_dir()), candidates[0])


def student_checkpoint(path: str | Path | None = None) -> Path:
    """A student weights file: ``path`` when given, else the shipped geometry-only student (FPFH + normals teacher)."""
    return Path(path) if path else shipped_checkpoints() / "student" / "geometry_fpfh_normals.pt"


def cache_dir() -> Path:
    """``$OVSEG3D_CACHE``; else ``.cache/`` of a writable checkout; else the user's cache dir.

    An installed package directory may be read-only (``/opt/ros``), so an install never caches beside itself.
    """
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    if (SOURCE_ROOT / "package.xml").is_file() and os.access(SOURCE_ROOT, os.W_OK):  # a checkout
        return SOURCE_ROOT / ".cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("ovseg3d", appauthor=False))
