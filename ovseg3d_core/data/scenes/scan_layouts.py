"""Which layout a scan folder holds, reading a scan from either, and converting between them.

Evaluation accepts scan folders as ScanNet ships them (the mesh triple: ``<scene>_vh_clean_2.ply``,
its ``.segs.json`` and ``.aggregation.json``, with the label table beside the folder) or as
Pointcept's preprocessing writes them (``.npy`` arrays); both read into the same
:class:`~ovseg3d_core.data.scenes.labeled_scan.LabeledScan`, so a scan scores the same in either layout.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from ovseg3d_core.data.root import DataNotFoundError
from ovseg3d_core.data.scenes import pointcept
from ovseg3d_core.data.scenes.labeled_scan import LabeledScan, ScanFormatError
from ovseg3d_core.data.scenes.scannet import ScanNetLabelTable, load_scannet_scan


class ScanLayout(StrEnum):
    """How a folder stores its scan; the value is the name the command line prints."""

    SCANNET_MESH = "scannet-mesh"
    POINTCEPT = "pointcept"


def scannet_mesh_path(folder: Path) -> Path:
    """The mesh file that marks a folder in ScanNet's own layout."""
    return Path(folder) / f"{Path(folder).name}_vh_clean_2.ply"


def detect_scan_layout(folder: str | Path) -> ScanLayout:
    """The layout of ``folder``; a folder with both or neither is an error naming what was looked for."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataNotFoundError(f"scan folder {folder} not found")
    mesh = scannet_mesh_path(folder)
    has_mesh, has_arrays = mesh.is_file(), pointcept.holds_pointcept_arrays(folder)
    if has_mesh and has_arrays:
        raise ScanFormatError(
            f"{folder} holds both a ScanNet mesh ({mesh.name}) and Pointcept arrays (.npy); "
            "keep one layout per folder or pass layout= to load_scan"
        )
    if has_mesh:
        return ScanLayout.SCANNET_MESH
    if has_arrays:
        return ScanLayout.POINTCEPT
    raise ScanFormatError(
        f"{folder} holds no scan: looked for {mesh.name} (ScanNet mesh layout) and "
        f"{', '.join(pointcept.ARRAY_FILES)} (Pointcept layout)"
    )


def load_scan(
    folder: str | Path,
    label_table: ScanNetLabelTable | str | Path | None = None,
    layout: ScanLayout | str | None = None,
) -> LabeledScan:
    """Read the scan in ``folder`` in whichever layout it is (or in ``layout``).

    ``label_table`` is used by the mesh layout only (default: the table beside the folder);
    Pointcept folders carry their labels already mapped.
    """
    folder = Path(folder)
    layout = ScanLayout(layout) if layout is not None else detect_scan_layout(folder)
    if layout is ScanLayout.POINTCEPT:
        return pointcept.load_pointcept_scan(folder)
    table = label_table if label_table is None or isinstance(label_table, ScanNetLabelTable) else Path(label_table)
    return load_scannet_scan(folder, table).to_labeled_scan()


def convert_to_pointcept(
    source: str | Path, destination: str | Path, label_table: ScanNetLabelTable | str | Path | None = None
) -> LabeledScan:
    """Write the scan in ``source`` (either layout) into ``destination`` as a Pointcept folder; returns it."""
    pointcept.check_new_folder(destination)  # before the read, which takes about a second
    scan = load_scan(source, label_table)
    pointcept.save_pointcept_scan(scan, destination)
    return scan
