"""Pointcept's preprocessed ScanNet layout: one folder of ``.npy`` arrays per scan, no mesh.

Most 3D research code reads ScanNet this way. A folder holds ``coord.npy`` (float32 Nx3),
``color.npy`` (uint8 Nx3), ``normal.npy`` (float32 Nx3), ``segment20.npy`` (int64 N, ScanNet20
index or -1), ``instance.npy`` (int64 N, aggregation object id or -1) and optionally
``segment200.npy`` (int64 N, ScanNet200 index or -1), as Pointcept's
pointcept/datasets/preprocessing/scannet/preprocess_scannet.py writes them. Folders come from other
people's pipelines, so every array is checked on load and a problem is reported with the file it
is in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ovseg3d_core.atomic_file import atomic_folder
from ovseg3d_core.data.root import DataNotFoundError
from ovseg3d_core.data.scenes.labeled_scan import IGNORE_LABEL, NO_INSTANCE, LabeledScan, ScanFormatError
from ovseg3d_core.data.scenes.scannet import SCANNET20_CLASSES, SCANNET200_CLASSES

REQUIRED_ARRAYS = ("coord", "color", "normal", "segment20", "instance")
OPTIONAL_ARRAYS = ("segment200",)
ARRAY_FILES = tuple(f"{name}.npy" for name in REQUIRED_ARRAYS + OPTIONAL_ARRAYS)
_VECTOR_ARRAYS = ("coord", "color", "normal")
_CLASS_COUNTS = {"segment20": len(SCANNET20_CLASSES), "segment200": len(SCANNET200_CLASSES)}


def holds_pointcept_arrays(folder: Path) -> bool:
    """Whether ``folder`` holds any of the layout's array files (a partial folder counts, to report it)."""
    return any((Path(folder) / file).is_file() for file in ARRAY_FILES)


def _read_array(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ScanFormatError(f"{path}: not a readable .npy array ({error})") from error
    if not isinstance(array, np.ndarray):
        raise ScanFormatError(f"{path}: holds an archive of arrays, not one .npy array")
    return array


def _checked_arrays(arrays: dict[str, np.ndarray], where: Callable[[str], str]) -> dict[str, np.ndarray]:
    """The arrays in the layout's dtypes, or a :class:`ScanFormatError` naming ``where(name)``."""
    coord = arrays["coord"]
    if coord.ndim != 2 or coord.shape[1] != 3:
        raise ScanFormatError(f"{where('coord')}: shape {coord.shape}, expected (N, 3) point coordinates")
    count = len(coord)
    if count == 0:
        raise ScanFormatError(f"{where('coord')}: empty scan (0 points)")
    checked: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        expected = (count, 3) if name in _VECTOR_ARRAYS else (count,)
        if array.ndim == len(expected) and array.shape[1:] == expected[1:] and len(array) != count:
            raise ScanFormatError(f"{where(name)}: {len(array)} entries, but coord.npy has {count} points")
        if array.shape != expected:
            raise ScanFormatError(f"{where(name)}: shape {array.shape}, expected {expected}")
        if name in ("coord", "normal"):
            checked[name] = _finite_floats(array, name, where)
        elif name == "color":
            checked[name] = _colors(array, where)
        else:
            checked[name] = _labels(array, name, where)
    return checked


def _finite_floats(array: np.ndarray, name: str, where: Callable[[str], str]) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.floating):
        raise ScanFormatError(f"{where(name)}: dtype {array.dtype}, expected float32")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        what = "coordinates" if name == "coord" else "normals"
        raise ScanFormatError(
            f"{where(name)}: {int(bad.sum())} points have NaN or infinite {what} (first: point {int(bad.argmax())})"
        )
    return array.astype(np.float32, copy=False)


def _colors(array: np.ndarray, where: Callable[[str], str]) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.integer):
        raise ScanFormatError(f"{where('color')}: dtype {array.dtype}, expected uint8 RGB")
    if array.dtype != np.uint8 and (array.min() < 0 or array.max() > 255):
        raise ScanFormatError(f"{where('color')}: values {array.min()}..{array.max()} outside 0..255")
    return array.astype(np.uint8, copy=False)


def _labels(array: np.ndarray, name: str, where: Callable[[str], str]) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.integer):
        raise ScanFormatError(f"{where(name)}: dtype {array.dtype}, expected int64 ids")
    array = array.astype(np.int64, copy=False)
    if name == "instance":
        bad, allowed = array < NO_INSTANCE, f"an object id >= 0 or {NO_INSTANCE}"
    else:
        classes = _CLASS_COUNTS[name]
        bad, allowed = (array < IGNORE_LABEL) | (array >= classes), f"0..{classes - 1} or {IGNORE_LABEL}"
    if bad.any():
        first = int(bad.argmax())
        raise ScanFormatError(
            f"{where(name)}: {int(bad.sum())} labels out of range, expected {allowed} "
            f"(first: {int(array[first])} at point {first})"
        )
    return array


def load_pointcept_scan(folder: str | Path) -> LabeledScan:
    """Read and check a Pointcept scan folder; the scan is named after the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataNotFoundError(f"scan folder {folder} not found")
    missing = [f"{name}.npy" for name in REQUIRED_ARRAYS if not (folder / f"{name}.npy").is_file()]
    if missing:
        raise ScanFormatError(
            f"{folder}: missing {', '.join(missing)} (a Pointcept scan folder holds "
            f"{', '.join(f'{name}.npy' for name in REQUIRED_ARRAYS)} and optionally segment200.npy)"
        )
    present = [name for name in REQUIRED_ARRAYS + OPTIONAL_ARRAYS if (folder / f"{name}.npy").is_file()]
    arrays = _checked_arrays(
        {name: _read_array(folder / f"{name}.npy") for name in present}, lambda name: str(folder / f"{name}.npy")
    )
    return LabeledScan(
        name=folder.name,
        points=arrays["coord"],
        colors=arrays["color"],
        normals=arrays["normal"],
        segment20=arrays["segment20"],
        segment200=arrays.get("segment200"),
        instance=arrays["instance"],
        faces=None,
    )


def check_new_folder(folder: str | Path) -> None:
    """Raise unless ``folder`` is absent or empty: a conversion never mixes its files with others."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} already exists and is not an empty folder")


def save_pointcept_scan(scan: LabeledScan, folder: str | Path) -> Path:
    """Write ``scan`` as a Pointcept folder, all files or none.

    The arrays go into a hidden sibling folder first (each file through :func:`atomic_write`),
    which is then renamed to ``folder``: an interrupted conversion never leaves a half-written scan
    that a later evaluation would read. ``folder`` must not exist or be empty; faces are dropped,
    as the layout has no mesh.
    """
    folder = Path(folder)
    check_new_folder(folder)
    fields = {
        "coord": scan.points,
        "color": scan.colors,
        "normal": scan.normals,
        "segment20": scan.segment20,
        "instance": scan.instance,
    }
    if scan.segment200 is not None:
        fields["segment200"] = scan.segment200
    arrays = _checked_arrays(
        {name: np.asarray(array) for name, array in fields.items()}, lambda name: f"scan {scan.name}, {name}"
    )
    with atomic_folder(folder) as staging:  # an empty folder at ``folder`` is replaced, a non-empty one refused
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", array)
    return folder
