"""Point Fast DDS at the shipped large-message profile unless the user chose one (call before rclpy.init)."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
PROFILE_NAME = "fastdds_profile.xml"
PACKAGE_NAME = "ovseg3d_ros"


def fastdds_profile_path() -> Path:
    """The shipped profile: from the colcon install's share/ when installed, else the source tree's config/."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory(PACKAGE_NAME)) / "config" / PROFILE_NAME
        if installed.is_file():
            return installed
    except (ImportError, LookupError, OSError, ValueError):  # not installed with colcon
        pass
    source = Path(__file__).resolve().parents[1] / "config" / PROFILE_NAME
    if not source.is_file():
        raise FileNotFoundError(f"Fast DDS profile {PROFILE_NAME} not found in the install or at {source}")
    return source


def use_fastdds_profile(environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Set ``FASTDDS_DEFAULT_PROFILES_FILE`` to the shipped profile when unset and Fast DDS is the RMW.

    Returns the profile now in effect (the user's, if they set one), or None when another RMW is selected.
    """
    environ = os.environ if environ is None else environ
    if environ.get(PROFILE_ENV):
        return Path(environ[PROFILE_ENV])
    if environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") not in ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp"):
        return None
    path = fastdds_profile_path()
    environ[PROFILE_ENV] = str(path)
    return path
