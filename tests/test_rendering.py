"""Labeled-mesh rendering and the eye-height trajectory generator, on the real ScanNet sample."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg3d_core.data.scenes.rendering import (
    DEFAULT_RENDER_INTRINSICS,
    MAX_DEPTH_MM,
    NO_INSTANCE,
    MeshError,
    MeshRaycaster,
    TrajectoryConfig,
    estimate_floor,
    generate_trajectory,
    look_pose,
    render_views,
)
from ovseg3d_core.data.scenes.scannet import IGNORE_INDEX, SCANNET20_CLASSES, load_scannet_scan
from ovseg3d_core.frame import depth_mm_to_metres
from ovseg3d_core.geometry import CameraIntrinsics, GeometryError, backproject_depth, knn


@pytest.fixture(scope="module")
def scan():
    return load_scannet_scan()


@pytest.fixture(scope="module")
def raycaster(scan):
    return MeshRaycaster(scan, scan.scannet20_ids)


@pytest.fixture(scope="module")
def poses(raycaster):
    return generate_trajectory(raycaster, 12, seed=7)


@pytest.fixture(scope="module")
def views(raycaster, poses):
    return render_views(raycaster, None, poses[::3])


def test_views_are_complete_rgbd_frames(views, poses):
    assert len(views) == 4
    for view, pose in zip(views, poses[::3], strict=True):
        view.validate()
        np.testing.assert_array_equal(view.pose, pose)
        assert view.intrinsics == DEFAULT_RENDER_INTRINSICS
        assert view.labels.dtype == np.int32 and view.labels.shape == view.depth.shape
        assert (view.depth > 0).mean() > 0.5  # inside a room most rays hit something
        assert view.color[view.depth > 0].std() > 10
        np.testing.assert_array_equal(view.labels[view.depth == 0], IGNORE_INDEX)
        np.testing.assert_array_equal(view.color[view.depth == 0], 0)


def test_depth_is_whole_millimetres_as_a_16_bit_sensor_gives_it(views):
    for view in views:
        millimetres = view.depth_mm
        assert millimetres.dtype == np.uint16 and millimetres.shape == view.depth.shape
        np.testing.assert_array_equal(millimetres, np.rint(view.depth.astype(np.float64) * 1000.0))
        # Quantised, not merely rounded on export: depth * 1000 is integral up to float32 precision
        # (unquantised ray depths are 0.25 mm off the millimetre grid on average).
        assert np.abs(view.depth.astype(np.float64) * 1000.0 - millimetres).max() < 0.01
        # Exactly what a loader decoding the uint16 image gives back.
        np.testing.assert_array_equal(depth_mm_to_metres(millimetres, invalid=None), view.depth)
        np.testing.assert_array_equal(millimetres == 0, view.depth == 0)
        np.testing.assert_array_equal(view.labels[millimetres == 0], IGNORE_INDEX)
        assert 300 < np.median(millimetres[millimetres > 0]) < 8_000 and millimetres.max() < 20_000  # a room


def _pixel_rays(view, stride: int) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """World rays (origins, directions of unit camera z) of every ``stride``-th pixel, pixel (u, v)
    through the image point (u, v) as backproject_depth assumes; and those pixels as (rows, cols)."""
    k = view.intrinsics
    rows, cols = np.mgrid[0 : k.height : stride, 0 : k.width : stride]
    camera = np.stack([(cols - k.cx) / k.fx, (rows - k.cy) / k.fy, np.ones(rows.shape)], axis=-1).reshape(-1, 3)
    directions = camera @ view.pose[:3, :3].T
    return np.broadcast_to(view.pose[:3, 3], directions.shape), directions, (rows.ravel(), cols.ravel())


def test_depth_image_reprojects_onto_the_mesh_and_is_zero_where_nothing_is_hit(views, raycaster):
    for view in views:
        millimetres = view.depth_mm
        decoded = depth_mm_to_metres(millimetres, invalid=None)  # as a consumer of the uint16 image reads it
        points, _ = backproject_depth(decoded, view.intrinsics, view.pose, stride=2)
        assert np.mean(raycaster.distance(points) < 0.01) > 0.99
        # An independent ray cast: each pixel holds round(z-depth in mm) of the surface it sees, else 0.
        origins, directions, pixels = _pixel_rays(view, stride=2)
        t_hit = raycaster.cast(origins, directions)["t_hit"]
        sampled = millimetres[pixels].astype(np.float64)
        hit = np.isfinite(t_hit)
        assert hit.mean() > 0.5 and not hit.all()  # the views include pixels that see nothing
        agree = np.where(hit, np.abs(t_hit * 1000.0 - sampled) <= 0.502, sampled == 0)  # float32 t_hit
        assert agree.mean() > 0.9999  # allows a ray grazing a triangle edge to hit on one side only


def test_label_images_agree_with_nearest_mesh_vertices(views, scan):
    seen = set()
    for view in views:
        points, pixels = backproject_depth(view.depth, view.intrinsics, view.pose, stride=2)
        _, nearest = knn(scan.vertices, 1, queries=points)
        rendered = view.labels[pixels[:, 0], pixels[:, 1]]
        assert np.mean(rendered == scan.scannet20_ids[nearest[:, 0]]) > 0.97
        seen.update(np.unique(rendered).tolist())
    assert len(seen - {IGNORE_INDEX}) >= 4  # the walk sees several classes, not one wall


def test_other_labelling_reuses_the_scene(raycaster, scan, poses):
    (view,) = render_views(raycaster, scan.instance_ids, poses[:1])
    hit = view.depth > 0
    assert np.unique(view.labels[hit]).size > 2 and view.labels[hit].max() < len(scan.instance_labels)
    assert raycaster.vertex_labels is scan.scannet20_ids  # the original is untouched


def test_instance_image_follows_the_label_image(raycaster, scan, poses):
    (view,) = render_views(raycaster, None, poses[:1], vertex_instances=scan.instance_ids)
    (as_labels,) = render_views(raycaster, scan.instance_ids, poses[:1])
    hit = view.depth > 0
    assert view.instances.dtype == np.int32 and len(np.unique(view.instances[hit])) > 3
    # Same vertex per pixel as the label image: the instance ids rendered in the label channel.
    np.testing.assert_array_equal(view.instances[hit], as_labels.labels[hit])
    np.testing.assert_array_equal(view.instances[~hit], NO_INSTANCE)
    (plain,) = render_views(raycaster, None, poses[:1])
    np.testing.assert_array_equal(view.labels, plain.labels)  # ScanNet20 labels unchanged beside it
    assert plain.instances is None and raycaster.vertex_instances is None  # the original is untouched
    with_both = MeshRaycaster(scan, scan.scannet20_ids, scan.instance_ids)
    (built,) = render_views(with_both, None, poses[:1])
    np.testing.assert_array_equal(built.instances, view.instances)


def _triangle_scene(z: float = 2.0):
    """One triangle at depth z (spanning x, y in [-z/2, z/2]) facing a camera at the origin,
    red / green / blue corners, labels 0 / 1 / 2."""
    import open3d as o3d

    corners = np.array([[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [0.0, 1.0, 2.0]]) * z / 2.0
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(corners),
        o3d.utility.Vector3iVector([[0, 1, 2]]),
    )
    mesh.vertex_colors = o3d.utility.Vector3dVector(np.eye(3))
    return mesh


def test_depth_is_z_depth_and_colours_are_barycentric():
    intrinsics = CameraIntrinsics(100.0, 100.0, 50.0, 50.0, 101, 101)
    (view,) = render_views(_triangle_scene(), np.array([0, 1, 2]), np.eye(4)[None], intrinsics)
    hit = view.depth > 0
    np.testing.assert_array_equal(view.depth[hit], np.float32(2.0))  # a fronto-parallel plane: constant z
    np.testing.assert_array_equal(view.depth_mm[hit], 2000)
    # Pixel (u, v) sees x = (u - cx) / fx * z: vertex 0 (-1, -1) is at pixel (0, 0), vertex 1 at (100, 0).
    near_v0, near_v1, near_v2 = view.color[3, 4], view.color[3, 96], view.color[96, 50]
    assert near_v0.argmax() == 0 and near_v1.argmax() == 1 and near_v2.argmax() == 2
    centroid = view.color[int(50 - 100 / 6), 50].astype(int)  # barycentre (0, -1/3, 2) -> roughly grey
    assert np.all(np.abs(centroid - 85) < 15)
    assert (view.labels[3, 4], view.labels[3, 96], view.labels[96, 50]) == (0, 1, 2)
    assert view.labels[1, 25] == 0 and view.labels[1, 75] == 1  # nearest vertex along the bottom edge
    assert view.labels[100, 0] == IGNORE_INDEX and view.depth[100, 0] == 0  # outside the triangle
    assert view.depth_mm[100, 0] == 0


def test_surfaces_beyond_the_uint16_range_are_no_return():
    intrinsics = CameraIntrinsics(100.0, 100.0, 50.0, 50.0, 101, 101)
    near_mm, far_mm = MAX_DEPTH_MM, MAX_DEPTH_MM + 1  # 65.534 m is the farthest encodable depth
    (near,) = render_views(_triangle_scene(near_mm / 1000.0), np.array([0, 1, 2]), np.eye(4)[None], intrinsics)
    (far,) = render_views(_triangle_scene(far_mm / 1000.0), np.array([0, 1, 2]), np.eye(4)[None], intrinsics)
    hit = near.depth_mm > 0
    assert hit.mean() > 0.3
    np.testing.assert_array_equal(near.depth_mm[hit], MAX_DEPTH_MM)
    # One millimetre farther: no return in every channel, not a value saturated at the top of the range.
    assert not far.depth.any() and not far.depth_mm.any() and not far.color.any()
    np.testing.assert_array_equal(far.labels, IGNORE_INDEX)


def test_floor_estimate_finds_z_up(scan, raycaster):
    floor = estimate_floor(raycaster)
    assert np.degrees(np.arccos(floor.up @ [0.0, 0.0, 1.0])) < 2.0
    floor_vertices = scan.vertices[scan.scannet20_ids == SCANNET20_CLASSES.index("floor")]
    assert abs(floor.height - np.median(floor_vertices @ floor.up)) < 0.05


def test_trajectory_stays_in_free_space_at_eye_height(raycaster, poses):
    config = TrajectoryConfig()
    floor = estimate_floor(raycaster)
    positions = poses[:, :3, 3]
    for pose in poses:
        rotation = pose[:3, :3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
        assert abs(rotation[:, 0] @ floor.up) < 1e-9  # no roll: the image x axis stays horizontal
    assert raycaster.distance(positions).min() > config.clearance_m - config.grid_step_m
    np.testing.assert_allclose(positions @ floor.up - floor.height, config.eye_height_m, atol=1e-6)
    # Outside any object: rays in all directions mostly hit front faces.
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(256, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    for position in positions:
        hits = raycaster.cast(np.broadcast_to(position, directions.shape), directions)
        hit = np.isfinite(hits["t_hit"])
        back = np.sum(hits["primitive_normals"] * directions, axis=1) > 0
        assert np.mean(back[hit]) < 0.2
    assert np.ptp(positions, axis=0).max() > 1.0  # it walks


def test_trajectory_is_deterministic_per_seed(raycaster, poses):
    np.testing.assert_array_equal(generate_trajectory(raycaster, 12, seed=7), poses)
    other = generate_trajectory(raycaster, 12, seed=8)
    assert np.abs(other[:, :3, 3] - poses[:, :3, 3]).max() > 0.5


def test_look_pose_points_the_optical_axis():
    pose = look_pose(np.zeros(3), yaw=0.0, pitch=0.0, up=np.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(pose[:3, 1], [0, 0, -1], atol=1e-12)  # image y is down
    assert abs(pose[:3, 2] @ [0.0, 0.0, 1.0]) < 1e-12  # looks horizontally


def test_bad_inputs_raise(scan, raycaster):
    with pytest.raises(MeshError, match="vertex_labels"):
        MeshRaycaster(scan, np.zeros(10, dtype=np.int64))
    with pytest.raises(MeshError, match="integers"):
        raycaster.with_labels(np.zeros(len(scan.vertices), dtype=np.float32))
    with pytest.raises(GeometryError, match="N x 4 x 4"):
        render_views(raycaster, None, np.eye(4))
    with pytest.raises(GeometryError, match="non-rigid"):
        render_views(raycaster, None, (2 * np.eye(4))[None])
    with pytest.raises(ValueError, match="n_views"):
        generate_trajectory(raycaster, 0)
