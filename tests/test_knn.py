"""Exact k nearest neighbours: every backend against a brute-force reference of the tie rule.

The rule (ovseg3d_core.geometry): a query's neighbours are the k points with the smallest
(squared distance, index), the squared distance taken in float64 as (dx*dx + dy*dy) + dz*dz.
Integer grids give many exact ties (equal distances, duplicated points), so they test the rule.
"""

from __future__ import annotations

import numpy as np
import pytest

from ovseg3d_core import geometry
from ovseg3d_core.geometry import GeometryError, knn

BACKENDS = ("grid", "kdtree")


def brute_force(points, k, queries=None, exclude_self=False, rows=None):
    """The tie rule spelled out: squared distances to every point, stable sort (ties keep index order)."""
    queries = points if queries is None else queries
    rows = np.arange(len(queries)) if rows is None else rows
    diff = queries[rows, None, :] - points[None, :, :]
    d2 = (diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1]) + diff[..., 2] * diff[..., 2]
    if exclude_self:
        d2[np.arange(len(rows)), rows] = np.inf
    idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return np.sqrt(np.take_along_axis(d2, idx, axis=1)), idx


def by_index(dist, idx):
    """Rows reordered by index, to compare neighbour sets (``sort=False`` rows come in no set order)."""
    order = np.argsort(idx, axis=1)
    return np.take_along_axis(dist, order, axis=1), np.take_along_axis(idx, order, axis=1)


def integer_grid(seed, n, side, spacing=1.0):
    """``n`` random cells of a ``side``^3 grid, duplicates included, scaled by ``spacing``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, side, size=(n, 3)).astype(np.float64) * spacing


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize(
    ("seed", "n", "side", "spacing", "k"),
    [
        (0, 400, 6, 1.0, 12),  # 216 cells for 400 points: many duplicates, every shell tied
        (1, 700, 12, 1.0, 40),
        (2, 500, 9, 0.02, 25),  # a 2 cm grid: ties up to the rounding of the differences
        (3, 60, 4, 1.0, 59),  # k = N - 1: the whole set
    ],
)
def test_exact_with_ties_matches_brute_force(backend, exclude_self, seed, n, side, spacing, k):
    points = integer_grid(seed, n, side, spacing)
    k = min(k, n - 1) if exclude_self else k
    expected_d, expected_i = brute_force(points, k, exclude_self=exclude_self)
    dist, idx = knn(points, k, exclude_self=exclude_self, backend=backend)
    np.testing.assert_array_equal(idx, expected_i)
    np.testing.assert_array_equal(dist, expected_d)
    # Unsorted rows hold the same neighbours.
    dist, idx = by_index(*knn(points, k, exclude_self=exclude_self, backend=backend, sort=False))
    expected_d, expected_i = by_index(expected_d, expected_i)
    np.testing.assert_array_equal(idx, expected_i)
    np.testing.assert_array_equal(dist, expected_d)


def test_separate_queries_follow_the_rule():
    points = integer_grid(4, 600, 8)
    queries = np.concatenate([integer_grid(5, 200, 8), integer_grid(6, 100, 16) * 0.5 + 0.25])
    for k in (1, 7, 30):
        expected_d, expected_i = brute_force(points, k, queries=queries)
        dist, idx = knn(points, k, queries=queries)
        np.testing.assert_array_equal(idx, expected_i)
        np.testing.assert_array_equal(dist, expected_d)
    assert knn(points, 1, queries=queries)[1].shape == (300, 1)


def test_self_is_excluded_but_its_duplicates_are_not():
    points = integer_grid(7, 300, 5)
    points[10] = points[11] = points[12]
    dist, idx = knn(points, 8, exclude_self=True)
    assert not np.any(idx == np.arange(300)[:, None])
    for row, twins in ((10, (11, 12)), (11, (10, 12)), (12, (10, 11))):
        assert set(twins) <= set(idx[row]) and dist[row, 0] == 0.0


@pytest.mark.parametrize(
    ("spread", "clump", "k"),
    [
        (400, 3000, 16),  # the sparse points and outliers need more than the widest grid block
        (3000, 600, 4),  # the clump overfills its block (cells sized for the spread points)
    ],
)
def test_clumps_and_outliers_take_the_tree_fallback(spread, clump, k):
    rng = np.random.default_rng(8)
    outliers = np.array([[100.0, 0, 0], [0, -80.0, 3], [40.0, 40, 40]])
    points = np.concatenate([rng.random((spread, 3)) * 5.0, rng.random((clump, 3)) * 0.01, outliers])
    expected_d, expected_i = brute_force(points, k, exclude_self=True)
    dist, idx = knn(points, k, exclude_self=True, backend="grid")
    np.testing.assert_array_equal(idx, expected_i)
    np.testing.assert_array_equal(dist, expected_d)
    dist, idx = by_index(*knn(points, k, exclude_self=True, backend="grid", sort=False))
    expected_d, expected_i = by_index(expected_d, expected_i)
    np.testing.assert_array_equal(idx, expected_i)
    np.testing.assert_array_equal(dist, expected_d)


@pytest.mark.parametrize("exclude_self", [True, False])
def test_a_few_queries_scan_every_point_by_the_same_rule(monkeypatch, exclude_self):
    """Up to geometry._SCAN_QUERIES queries (e.g. the rows the grid leaves open on a large map) read every
    point instead of building a k-d tree: the same neighbours as the tree's and as brute force."""
    points = integer_grid(10, 900, 8, 0.02)
    rows = np.arange(3, 900, 17)
    expected_d, expected_i = brute_force(points, 30, exclude_self=exclude_self, rows=rows)
    for scanned in (0, len(rows)):  # the k-d tree, then the scan
        monkeypatch.setattr(geometry, "_SCAN_QUERIES", scanned)
        dist, idx = knn(points, 30, exclude_self=exclude_self, rows=rows, backend="kdtree")
        np.testing.assert_array_equal(idx, expected_i)
        np.testing.assert_array_equal(dist, expected_d)


def test_out_arrays_receive_the_rows_in_their_dtype():
    """A compact graph (float32 distances, int32 ids) is written directly: the float64 result rounded once."""
    points = integer_grid(11, 800, 9, 0.02)
    for rows in (None, np.arange(0, 800, 7)):
        subset = {} if rows is None else {"rows": rows}
        dist, idx = knn(points, 16, exclude_self=True, sort=False, **subset)
        out = np.empty(idx.shape, np.float32), np.empty(idx.shape, np.int32)
        compact = knn(points, 16, exclude_self=True, sort=False, out=out, **subset)
        assert compact[0] is out[0] and compact[1] is out[1]
        np.testing.assert_array_equal(out[1], idx)
        np.testing.assert_array_equal(out[0], dist.astype(np.float32))


def test_identical_points_resolve_to_lowest_indices():
    points = np.ones((50, 3))
    dist, idx = knn(points, 5, exclude_self=True)
    np.testing.assert_array_equal(idx[0], [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(idx[7], [0, 1, 2, 3, 4])
    assert not dist.any()


def test_deterministic_across_runs_threads_and_backends():
    points = integer_grid(9, 2000, 14, 0.02) + np.random.default_rng(9).normal(scale=0.002, size=(2000, 3))
    first = knn(points, 24, exclude_self=True, sort=False)
    again = knn(points, 24, exclude_self=True, sort=False)
    single = knn(points, 24, exclude_self=True, sort=False, threads=1)
    for other in (again, single):
        np.testing.assert_array_equal(first[0], other[0])
        np.testing.assert_array_equal(first[1], other[1])
    grid, tree = (
        knn(points, 24, exclude_self=True, backend="grid"),
        knn(points, 24, exclude_self=True, backend="kdtree"),
    )
    np.testing.assert_array_equal(grid[1], tree[1])
    np.testing.assert_array_equal(grid[0], tree[0])


@pytest.fixture(scope="module")
def real_map():
    """Voxel positions of a real 7-Scenes map (every 50th of the first 500 frames, 2 cm voxels)."""
    from ovseg3d_core.data.scenes.sevenscenes import SevenScenes
    from ovseg3d_core.scene import SceneMap

    frames = SevenScenes()
    scene = SceneMap()
    for i in range(0, 500, 50):
        scene.integrate(frames[i])
    return scene.positions().astype(np.float64)


def test_real_map_pooling_graph_is_exact(real_map):
    """The pooling graph (K=96, itself excluded): grid == k-d tree everywhere, == brute force on a sample."""
    points = real_map
    assert len(points) > 20_000
    dist, idx = by_index(*knn(points, 96, exclude_self=True, sort=False))
    tree_d, tree_i = by_index(*knn(points, 96, exclude_self=True, backend="kdtree"))
    np.testing.assert_array_equal(idx, tree_i)
    np.testing.assert_array_equal(dist, tree_d)
    rows = np.random.default_rng(0).choice(len(points), 300, replace=False)
    expected_d, expected_i = by_index(*brute_force(points, 96, exclude_self=True, rows=rows))
    np.testing.assert_array_equal(idx[rows], expected_i)
    np.testing.assert_array_equal(dist[rows], expected_d)
    # A subset (what an incremental update asks): the grid then holds only the cells near the queries.
    region = np.flatnonzero(np.abs(points - points[len(points) // 2]).max(axis=1) < 0.5)
    subset = np.union1d(region, rows)
    assert 1000 < len(region) < len(points) // 4
    sub_d, sub_i = by_index(*knn(points, 96, exclude_self=True, sort=False, rows=subset, backend="grid"))
    np.testing.assert_array_equal(sub_i, idx[subset])
    np.testing.assert_array_equal(sub_d, dist[subset])


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((np.zeros((3, 3)), 5), {"exclude_self": True}, "need at least 5 neighbours, have 2"),
        ((np.zeros((3, 3)), 0), {}, "need at least 0"),
        ((np.zeros((4, 2)), 1), {}, "N x 3"),
        ((np.array([[0.0, 0, 0], [np.nan, 0, 0]]), 1), {}, "NaN or inf"),
        ((np.zeros((4, 3)), 1), {"queries": np.array([[np.inf, 0, 0]])}, "NaN or inf"),
        ((np.zeros((4, 3)), 1), {"queries": np.zeros((2, 3)), "exclude_self": True}, "leave queries out"),
        ((np.zeros((4, 3)), 1), {"queries": np.zeros((2, 3)), "backend": "grid"}, "leave queries out"),
        ((np.zeros((4, 3)), 1), {"out": (np.zeros((3, 1)), np.zeros((4, 1), np.int32))}, "out must be two 4 x 1"),
    ],
)
def test_bad_input_raises_clear_errors(args, kwargs, message):
    with pytest.raises(GeometryError, match=message):
        knn(*args, **kwargs)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        knn(np.zeros((4, 3)), 1, backend="faiss")
