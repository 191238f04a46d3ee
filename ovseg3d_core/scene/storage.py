"""The versioned ``.npz`` file format of a voxel map: writing, reading, and migrating older versions.

A file holds the per-voxel arrays (``voxel/<name>``), the attached channels (``channel/<name>``),
their fill values, the config and the integration tick; older layouts are migrated on read one
version at a time, so a reader never sees anything but :data:`FORMAT_VERSION`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovseg3d_core.atomic_file import atomic_savez
from ovseg3d_core.scene.config import SceneConfig

FORMAT_VERSION = 2
"""Saved-file layout version. 1: geometry only (mean position/colour, counts, last-seen stamps);
2: adds position/colour sums, view directions, integration ticks, features and channels."""


class SceneFormatError(ValueError):
    """A saved scene file is unreadable, of an unknown version, or inconsistent."""


@dataclass
class SavedScene:
    """What a scene file holds: the map's per-voxel arrays and channels (one row per voxel), the
    channels' fill values, the config it was built with and its integration tick."""

    config: SceneConfig
    arrays: dict[str, np.ndarray]
    channels: dict[str, np.ndarray]
    fills: dict[str, float]
    tick: int


def write_scene(path: str | Path, scene: SavedScene) -> Path:
    """Save atomically (temporary file + ``os.replace``) as a versioned ``.npz``."""
    path = Path(path)
    payload = {f"voxel/{name}": array for name, array in scene.arrays.items()}
    payload.update({f"channel/{name}": array for name, array in scene.channels.items()})
    payload["format_version"] = np.array(FORMAT_VERSION)
    payload["config_json"] = np.array(json.dumps(scene.config.to_dict()))
    payload["channel_fill_json"] = np.array(json.dumps(scene.fills))
    payload["tick"] = np.array(scene.tick)
    atomic_savez(path, **payload)
    return path


def read_scene(path: str | Path, config: SceneConfig | None = None) -> SavedScene:
    """Read a file written by :func:`write_scene` (any version up to :data:`FORMAT_VERSION`).

    Without ``config`` the saved one is returned; a given config must keep the saved voxel size.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scene file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {name: data[name] for name in data.files}
    except (OSError, ValueError) as error:
        raise SceneFormatError(f"cannot read scene file {path}: {error}") from error
    if "format_version" not in contents:
        raise SceneFormatError(f"{path} is not a scene file (no format_version)")
    version = int(contents["format_version"])
    if version > FORMAT_VERSION:
        raise SceneFormatError(f"{path} has format {version}; this reader knows up to {FORMAT_VERSION}")
    for migrate_from in range(version, FORMAT_VERSION):
        contents = _MIGRATIONS[migrate_from](contents)
    try:
        saved = SceneConfig.from_dict(json.loads(str(contents["config_json"])))
        arrays = {name[len("voxel/") :]: a for name, a in contents.items() if name.startswith("voxel/")}
        channels = {name[len("channel/") :]: a for name, a in contents.items() if name.startswith("channel/")}
        missing = {"keys", "pos_sum", "rgb_sum", "count", "last_seen", "tick", "view_sum"} - set(arrays)
        if missing:
            raise SceneFormatError(f"{path} lacks arrays {sorted(missing)}")
        if {len(a) for a in (*arrays.values(), *channels.values())} - {len(arrays["keys"])}:
            raise SceneFormatError(f"{path}: per-voxel arrays have different lengths")
    except KeyError as error:
        raise SceneFormatError(f"{path} lacks {error}") from error
    if config is not None and not np.isclose(config.voxel_size, saved.voxel_size):
        raise SceneFormatError(f"{path} was built with voxel {saved.voxel_size} m, config asks {config.voxel_size}")
    fills = json.loads(str(contents.get("channel_fill_json", "{}")))
    return SavedScene(config or saved, arrays, channels, fills, int(contents["tick"]))


def _migrate_v1(contents: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Version 1 (geometry only: mean position/colour, counts, last-seen) -> version 2 sums and defaults."""
    count = contents["count"].astype(np.float32)
    n = len(count)
    config = SceneConfig(voxel_size=float(contents["voxel_size"]))
    return {
        "format_version": np.array(2),
        "config_json": np.array(json.dumps(config.to_dict())),
        "tick": np.array(0),
        "voxel/keys": contents["keys"].astype(np.int64),
        "voxel/pos_sum": contents["positions"].astype(np.float64) * count[:, None],
        "voxel/rgb_sum": contents["colors"].astype(np.float32) * count[:, None],
        "voxel/count": count,
        "voxel/last_seen": contents["last_seen"].astype(np.float64),
        "voxel/tick": np.zeros(n, np.int64),
        "voxel/view_sum": np.zeros((n, 3), np.float32),
    }


_MIGRATIONS = {1: _migrate_v1}
