"""Scan folder layouts on the real scene0000_00: ScanNet's mesh triple converted to Pointcept's arrays.

Evaluation must score a scan identically in either layout, so the converted arrays are compared
with the mesh loader's labels point for point, and every malformed Pointcept folder must fail
with an error that names the file and what is wrong with it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ovseg3d_core.data.root import DataNotFoundError, data_path
from ovseg3d_core.data.scenes import pointcept
from ovseg3d_core.data.scenes.labeled_scan import ScanFormatError
from ovseg3d_core.data.scenes.pointcept import REQUIRED_ARRAYS, load_pointcept_scan, save_pointcept_scan
from ovseg3d_core.data.scenes.scan_layouts import ScanLayout, convert_to_pointcept, detect_scan_layout, load_scan
from ovseg3d_core.data.scenes.scannet import IGNORE_INDEX, ScanNetFormatError, load_scannet_scan
from ovseg3d_core.tools import scan as scan_tool

from conftest import REPO_ROOT

POINTS = 81_369  # vertices of scene0000_00_vh_clean_2.ply (data README)


@pytest.fixture(scope="module")
def mesh_folder() -> Path:
    return data_path("scannet", "scene0000_00")


@pytest.fixture(scope="module")
def mesh_scan(mesh_folder):
    return load_scannet_scan(mesh_folder)


@pytest.fixture(scope="module")
def converted(mesh_folder, tmp_path_factory) -> Path:
    destination = tmp_path_factory.mktemp("pointcept") / "scene0000_00"
    convert_to_pointcept(mesh_folder, destination)
    return destination


@pytest.fixture
def copy_of_converted(converted, tmp_path) -> Path:
    """A private copy to damage; the converted folder itself stays intact for other tests."""
    return Path(shutil.copytree(converted, tmp_path / "scene0000_00"))


def _error_naming(path: Path, problem: str) -> str:
    return re.escape(str(path)) + ".*" + problem


# --- conversion ----------------------------------------------------------------------------------


def test_converted_folder_holds_the_layouts_arrays_with_its_dtypes(converted):
    expected = {
        "coord.npy": (np.float32, (POINTS, 3)),
        "color.npy": (np.uint8, (POINTS, 3)),
        "normal.npy": (np.float32, (POINTS, 3)),
        "segment20.npy": (np.int64, (POINTS,)),
        "segment200.npy": (np.int64, (POINTS,)),
        "instance.npy": (np.int64, (POINTS,)),
    }
    assert sorted(path.name for path in converted.iterdir()) == sorted(expected)
    for name, (dtype, shape) in expected.items():
        array = np.load(converted / name, allow_pickle=False)
        assert (array.dtype, array.shape) == (np.dtype(dtype), shape), name
    # Files get the umask's usual mode, not the private mode of atomic_write's temporary files.
    assert (converted / "coord.npy").stat().st_mode & 0o666 == converted.stat().st_mode & 0o666


def test_converted_labels_equal_the_mesh_loaders_with_minus_one_for_ignore(converted, mesh_scan):
    segment20 = np.load(converted / "segment20.npy")
    np.testing.assert_array_equal(
        segment20, np.where(mesh_scan.scannet20_ids == IGNORE_INDEX, -1, mesh_scan.scannet20_ids)
    )
    segment200 = np.load(converted / "segment200.npy")
    np.testing.assert_array_equal(
        segment200, np.where(mesh_scan.scannet200_ids == IGNORE_INDEX, -1, mesh_scan.scannet200_ids)
    )
    # Both ignored (unlabeled or non-benchmark) and labeled points occur, and nothing else.
    assert (segment20 == -1).sum() == (mesh_scan.scannet20_ids == IGNORE_INDEX).sum() > 0
    assert segment20.max() <= 19 and len(np.unique(segment20[segment20 >= 0])) > 10


def test_converted_instances_and_geometry_equal_the_mesh(converted, mesh_scan):
    instance = np.load(converted / "instance.npy")
    np.testing.assert_array_equal(instance, mesh_scan.instance_ids)
    assert len(np.unique(instance[instance >= 0])) == len(mesh_scan.instance_labels) == 67
    np.testing.assert_array_equal(np.load(converted / "coord.npy"), mesh_scan.vertices)
    np.testing.assert_array_equal(np.load(converted / "color.npy"), mesh_scan.colors)


def test_normals_are_unit_area_weighted_vertex_normals(converted, mesh_scan):
    normals = np.load(converted / "normal.npy")
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    # Open3D's vertex normals are also area-weighted sums of triangle normals: an independent check.
    mesh = mesh_scan.to_open3d()
    mesh.compute_vertex_normals()
    agreement = np.sum(normals * np.asarray(mesh.vertex_normals), axis=1)
    assert agreement.min() > 0.9999


def test_both_layouts_load_to_the_same_scan(converted, mesh_folder):
    from_mesh, from_arrays = load_scan(mesh_folder), load_scan(converted)
    assert from_mesh.name == from_arrays.name == "scene0000_00"
    for field in ("points", "colors", "normals", "segment20", "segment200", "instance"):
        mesh_array, pointcept_array = getattr(from_mesh, field), getattr(from_arrays, field)
        assert mesh_array.dtype == pointcept_array.dtype, field
        np.testing.assert_array_equal(mesh_array, pointcept_array, err_msg=field)
    assert from_mesh.faces.shape == (153_587, 3) and from_arrays.faces is None
    assert from_arrays.num_points == POINTS


def test_segment200_is_optional_and_a_pointcept_folder_converts_again(copy_of_converted, tmp_path):
    (copy_of_converted / "segment200.npy").unlink()
    scan = load_pointcept_scan(copy_of_converted)
    assert scan.segment200 is None and scan.num_points == POINTS
    again = tmp_path / "again" / "scene0000_00"
    convert_to_pointcept(copy_of_converted, again)
    assert not (again / "segment200.npy").exists()
    np.testing.assert_array_equal(np.load(again / "segment20.npy"), scan.segment20)


def test_an_interrupted_save_leaves_neither_destination_nor_staging(converted, tmp_path, monkeypatch):
    scan = load_pointcept_scan(converted)
    written: list[Path] = []
    real_save = np.save

    def save_then_fail(path, array):
        if len(written) == 3:
            raise OSError("disk full")
        real_save(path, array)
        written.append(Path(path))

    monkeypatch.setattr(pointcept.np, "save", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_pointcept_scan(scan, tmp_path / "out" / "scene0000_00")
    assert len(written) == 3
    assert list((tmp_path / "out").iterdir()) == []


def test_saving_refuses_a_folder_that_holds_files(converted, mesh_folder):
    before = sorted(path.name for path in converted.iterdir())
    with pytest.raises(FileExistsError, match=re.escape(str(converted))):
        convert_to_pointcept(mesh_folder, converted)
    assert sorted(path.name for path in converted.iterdir()) == before


# --- layout detection ----------------------------------------------------------------------------


def test_layout_detector_tells_the_layouts_apart(mesh_folder, converted, tmp_path):
    assert detect_scan_layout(mesh_folder) is ScanLayout.SCANNET_MESH
    assert detect_scan_layout(converted) is ScanLayout.POINTCEPT

    empty = tmp_path / "scene0001_00"
    empty.mkdir()
    with pytest.raises(ScanFormatError, match=r"no scan: looked for scene0001_00_vh_clean_2\.ply .*coord\.npy"):
        load_scan(empty)

    both = Path(shutil.copytree(converted, tmp_path / "scene0000_00"))
    shutil.copy(mesh_folder / "scene0000_00_vh_clean_2.ply", both)
    with pytest.raises(ScanFormatError, match="both a ScanNet mesh"):
        detect_scan_layout(both)
    assert load_scan(both, layout="pointcept").faces is None  # an explicit layout settles it

    with pytest.raises(DataNotFoundError, match="not found"):
        load_scan(tmp_path / "absent")


def test_a_broken_mesh_folder_fails_with_the_same_error_family(mesh_folder, tmp_path):
    folder = tmp_path / "scene0000_00"
    folder.mkdir()
    shutil.copy(mesh_folder / "scene0000_00_vh_clean_2.ply", folder)
    shutil.copy(mesh_folder / "scene0000_00_vh_clean.aggregation.json", folder)
    (folder / "scene0000_00_vh_clean_2.0.010000.segs.json").write_text('{"segIndices": [0, 1, 2]}')
    with pytest.raises(ScanFormatError, match="3 segment ids for 81369 vertices") as caught:
        load_scan(folder, data_path("scannet", "scannetv2-labels.combined.tsv"))
    assert isinstance(caught.value, ScanNetFormatError)


# --- bad Pointcept folders -----------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED_ARRAYS)
def test_a_missing_required_array_is_named(copy_of_converted, name):
    (copy_of_converted / f"{name}.npy").unlink()
    with pytest.raises(ScanFormatError, match=_error_naming(copy_of_converted, f"missing {name}\\.npy")):
        load_scan(copy_of_converted)


@pytest.mark.parametrize("name", ["color", "normal", "segment20", "segment200", "instance"])
def test_an_array_of_another_length_is_named(copy_of_converted, name):
    path = copy_of_converted / f"{name}.npy"
    np.save(path, np.load(path)[:-10])
    problem = f"{POINTS - 10} entries, but coord.npy has {POINTS}"
    with pytest.raises(ScanFormatError, match=_error_naming(path, problem)):
        load_pointcept_scan(copy_of_converted)


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("segment20", 20, "0..19 or -1"),
        ("segment20", -2, "0..19 or -1"),
        ("segment200", 200, "0..199 or -1"),
        ("instance", -3, "an object id >= 0 or -1"),
    ],
)
def test_labels_out_of_range_are_named(copy_of_converted, name, value, allowed):
    path = copy_of_converted / f"{name}.npy"
    labels = np.load(path)
    labels[[7, 11]] = value
    np.save(path, labels)
    problem = f"2 labels out of range, expected {re.escape(allowed)} \\(first: {value} at point 7\\)"
    with pytest.raises(ScanFormatError, match=_error_naming(path, problem)):
        load_scan(copy_of_converted)


def test_nan_coordinates_are_named(copy_of_converted):
    path = copy_of_converted / "coord.npy"
    coord = np.load(path)
    coord[123, 2] = np.nan
    coord[456, 0] = np.inf
    np.save(path, coord)
    with pytest.raises(ScanFormatError, match=_error_naming(path, "2 points have NaN or infinite coordinates")):
        load_scan(copy_of_converted)


def test_an_empty_scan_is_named(copy_of_converted):
    for name in ("coord", "color", "normal"):
        np.save(copy_of_converted / f"{name}.npy", np.zeros((0, 3), np.uint8 if name == "color" else np.float32))
    for name in ("segment20", "segment200", "instance"):
        np.save(copy_of_converted / f"{name}.npy", np.zeros(0, np.int64))
    problem = r"empty scan \(0 points\)"
    with pytest.raises(ScanFormatError, match=_error_naming(copy_of_converted / "coord.npy", problem)):
        load_scan(copy_of_converted)


def test_unreadable_or_mistyped_arrays_are_named(copy_of_converted):
    path = copy_of_converted / "segment20.npy"
    np.save(path, np.load(path).astype(np.float32))
    with pytest.raises(ScanFormatError, match=_error_naming(path, "dtype float32, expected int64")):
        load_scan(copy_of_converted)
    path.write_bytes(b"not an array")
    with pytest.raises(ScanFormatError, match=_error_naming(path, "not a readable .npy array")):
        load_scan(copy_of_converted)


# --- command line --------------------------------------------------------------------------------


def test_convert_command_writes_the_folder_and_reports_errors(mesh_folder, tmp_path, capsys):
    destination = tmp_path / "scene0000_00"
    assert scan_tool.main(["convert", str(mesh_folder), str(destination)]) == 0
    out, err = capsys.readouterr()
    assert "reading" in err and "scannet-mesh layout" in err
    assert re.search(rf"wrote {re.escape(str(destination))}: {POINTS} points, \d+ with a ScanNet20 label, 67 ", out)
    assert detect_scan_layout(destination) is ScanLayout.POINTCEPT

    assert scan_tool.main(["convert", str(mesh_folder), str(destination)]) == 1
    assert "already exists" in capsys.readouterr().err
    (destination / "normal.npy").unlink()
    assert scan_tool.main(["convert", str(destination), str(tmp_path / "other")]) == 1
    assert re.search(r"ovseg3d-scan: error: .*missing normal\.npy", capsys.readouterr().err)


def test_the_ros_launcher_cmake_generates_runs_convert(mesh_folder, tmp_path):
    """CMakeLists.txt maps ovseg3d-scan to a module; run the launcher it writes, as `ros2 run` would."""
    cmake = (REPO_ROOT / "CMakeLists.txt").read_text()
    module = re.search(r'"ovseg3d-scan=([\w.]+)"', cmake).group(1)
    launcher = f"import sys\nfrom {module} import main\nsys.exit(main())\n"
    destination = tmp_path / "scene0000_00"
    result = subprocess.run(
        [sys.executable, "-c", launcher, "convert", str(mesh_folder), str(destination)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert load_pointcept_scan(destination).num_points == POINTS
    setup = (REPO_ROOT / "setup.py").read_text()
    assert f'"ovseg3d-scan = {module}:main"' in setup
