"""Point Fast DDS at the shipped large-message profile unless the user chose one (call before rclpy.init)."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
# The name Fast DDS 2.x reads (ROS 2 Humble and Jazzy). 3.x (Kilted) reads PROFILE_ENV and warns on
# every participant when this one is set, so it is set only where 2.x is installed.
LEGACY_PROFILE_ENV = "FASTRTPS_DEFAULT_PROFILES_FILE"
FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")
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


def profile_variable(environ: MutableMapping[str, str] | None = None) -> str:
    """The profile variable the installed Fast DDS reads: from ROS_DISTRO, else the version of the PyPI
    wheel that ships it (``ros-fastdds`` from 3.0, ``ros-fastrtps`` before)."""
    environ = os.environ if environ is None else environ
    distro = environ.get("ROS_DISTRO", "")
    if distro:
        return LEGACY_PROFILE_ENV if distro in FAST_DDS_2_DISTROS else PROFILE_ENV
    for wheel in ("ros-fastdds", "ros-fastrtps"):
        try:
            major = int(version(wheel).split(".")[0])
        except (PackageNotFoundError, ValueError):
            continue
        return LEGACY_PROFILE_ENV if major < 3 else PROFILE_ENV
    return PROFILE_ENV


def use_fastdds_profile(environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Point Fast DDS at the shipped profile when the user chose none and Fast DDS is the RMW.

    The variable set is the one the installed Fast DDS reads (``profile_variable``). A profile the user
    named in either variable is kept, and named in that one too. Returns the profile now in effect
    (the user's, if they set one), or None when another RMW is selected.
    """
    environ = os.environ if environ is None else environ
    variable = profile_variable(environ)
    chosen = environ.get(PROFILE_ENV) or environ.get(LEGACY_PROFILE_ENV)
    if chosen:
        environ[variable] = environ.get(variable) or chosen
        return Path(environ[variable])
    if environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") not in ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp"):
        return None
    path = fastdds_profile_path()
    environ[variable] = str(path)
    return path
