"""Geometry-guided pooling: the operator's structure, its two equivalent paths, denoising, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg3d_core.data.scenes.scannet import IGNORE_INDEX, load_scannet_scan
from ovseg3d_core.geometry import knn
from ovseg3d_core.purify.pooling import (
    GeometryGuidedPooling,
    PoolingConfig,
    PoolingError,
    PoolingOperator,
    _propagate_rows,
    _propagate_rows_split,
    morton_order,
    move_rows,
    renumber_neighbours,
    warm_up,
)


def two_planes(n_side: int = 20, spacing: float = 0.02, seed: int = 0):
    """Two touching perpendicular planes (a floor and a wall) with one embedding direction each."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.arange(n_side) * spacing, np.arange(n_side) * spacing)
    floor = np.stack([u.ravel(), v.ravel(), np.zeros(u.size)], axis=1)
    wall = np.stack([u.ravel(), np.full(u.size, -spacing), v.ravel() + spacing], axis=1)
    positions = np.concatenate([floor, wall])
    labels = np.repeat([0, 1], u.size)
    embeddings = np.eye(8)[labels] + 0.05 * rng.standard_normal((len(labels), 8))
    return positions, embeddings, labels


@pytest.fixture(scope="module")
def scan_crop():
    """About 6,000 vertices of the real ScanNet scan with their ScanNet20 labels."""
    scan = load_scannet_scan()
    order = morton_order(scan.vertices)[:6000]
    return scan.vertices[order], scan.colors[order], scan.scannet20_ids[order]


def test_config_defaults_follow_geopurify():
    cfg = PoolingConfig()
    assert (cfg.k, cfg.scale, cfg.iterations) == (96, 20.0, 19)


def test_rows_are_stochastic_with_k_neighbours_and_no_self_loop():
    positions, embeddings, _ = two_planes()
    op = GeometryGuidedPooling(PoolingConfig(k=24)).from_embeddings(positions, embeddings)
    a = op.matrix
    np.testing.assert_allclose(np.asarray(a.sum(axis=1)).ravel(), 1.0, rtol=1e-5)
    assert (np.diff(a.indptr) == 24).all()
    assert a.diagonal().max() == 0.0
    # Each row's support is exactly that voxel's 24 nearest other voxels.
    _, neighbours = knn(positions, 24, exclude_self=True)
    row = 123
    assert set(a[row].indices) == set(neighbours[row])


def test_weights_are_softmax_of_scaled_cosine():
    positions, embeddings, _ = two_planes()
    op = GeometryGuidedPooling(PoolingConfig(k=16, scale=20.0)).from_embeddings(positions, embeddings)
    row = op.matrix[57]
    first, last = row.indices[0], row.indices[-1]
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    expected_ratio = np.exp(20.0 * (unit[57] @ unit[first] - unit[57] @ unit[last]))
    assert row[0, first] / row[0, last] == pytest.approx(expected_ratio, rel=1e-4)


def test_geometric_weights_follow_the_bilateral_formula():
    """Each row: softmax over the K neighbours of -d^2/2sd^2 - |drgb|^2/2sc^2 + s(|n_i.n_j| - 1)."""
    rng = np.random.default_rng(2)
    positions = rng.random((300, 3)) * 0.2
    colors = rng.integers(0, 256, (300, 3)).astype(np.float32)  # 0-255 input is rescaled to 0-1
    normals = rng.standard_normal((300, 3))
    config = PoolingConfig(k=12)
    weights = GeometryGuidedPooling(config).from_geometry(positions, colors, normals).matrix.toarray()
    geo = config.geometric
    distances, neighbours = knn(positions, 12, exclude_self=True)
    unit = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    for i in (0, 77, 299):
        j = neighbours[i]
        logits = (
            -(distances[i] ** 2) / (2 * geo.distance_sigma**2)
            - (((colors[j] - colors[i]) / 255.0) ** 2).sum(1) / (2 * geo.color_sigma**2)
            + geo.normal_sharpness * (np.abs(unit[j] @ unit[i]) - 1.0)
        )
        expected = np.exp(logits - logits.max())
        np.testing.assert_allclose(weights[i, j], expected / expected.sum(), rtol=1e-4, atol=1e-7)
        assert weights[i].sum() == pytest.approx(weights[i, j].sum(), abs=1e-6)  # nothing outside the K


def test_student_x_geometric_weights_are_the_normalised_product():
    """The hybrid affinity is the student's softmax times the bilateral kernel, renormalised per row."""
    positions, embeddings, _ = two_planes()
    rng = np.random.default_rng(1)
    colors = rng.random((len(positions), 3))
    normals = np.where(positions[:, 2:3] == 0, [0.0, 0.0, 1.0], [0.0, 1.0, 0.0])
    pooling = GeometryGuidedPooling(PoolingConfig(k=16))
    student = pooling.from_embeddings(positions, embeddings).matrix.toarray()
    geometric = pooling.from_geometry(positions, colors, normals).matrix.toarray()
    hybrid = pooling.from_embeddings_and_geometry(positions, embeddings, colors, normals).matrix.toarray()
    product = student * geometric
    np.testing.assert_allclose(hybrid, product / product.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-7)
    # With constant embeddings the student is indifferent and the hybrid is the bilateral kernel.
    flat = pooling.from_embeddings_and_geometry(positions, np.ones_like(embeddings), colors, normals).matrix
    np.testing.assert_allclose(flat.toarray(), geometric, rtol=1e-4, atol=1e-7)
    with pytest.raises(PoolingError, match="shape"):
        pooling.from_embeddings_and_geometry(positions, embeddings, colors[:-1], normals)
    for build in (pooling.from_embeddings, pooling.from_embeddings_and_geometry):
        with pytest.raises(PoolingError, match="embeddings are required"):
            build(positions, None)


def random_operator(n: int = 700, k: int = 24, seed: int = 0) -> PoolingOperator:
    """Uneven weights (random student embeddings) on random points: every row differs."""
    rng = np.random.default_rng(seed)
    return GeometryGuidedPooling(PoolingConfig(k=k)).from_embeddings(rng.random((n, 3)), rng.standard_normal((n, 8)))


def test_operator_rows_are_k_ascending_neighbours_with_unit_sum():
    op = random_operator()
    assert op.neighbours.dtype == np.int32 and op.weights.dtype == np.float32
    assert op.neighbours.shape == op.weights.shape == (700, 24)
    assert (np.diff(op.neighbours, axis=1) > 0).all()  # the stored order is the summation order
    np.testing.assert_allclose(op.weights.sum(axis=1), 1.0, rtol=1e-5)


@pytest.fixture(scope="module")
def operator_and_power():
    """A random operator and its A^iterations in float64, from the caller-order CSR matrix."""
    op = random_operator()
    return op, np.linalg.matrix_power(op.matrix.astype(np.float64).toarray(), op.iterations)


@pytest.mark.parametrize("width", [1, 3, 8, 13, 16, 17, 20, 23, 24, 29, 32, 45, 70])
def test_kernel_matches_the_matrix_power(operator_and_power, width):
    """Every column layout (4/8/16/32 lanes, 16 + 4/8 tails, several groups) against float64 A^T."""
    op, power = operator_and_power
    values = np.random.default_rng(width).standard_normal((op.num_voxels, width)).astype(np.float32)
    pooled = op.propagate(values)
    assert pooled.dtype == np.float32 and pooled.shape == values.shape
    np.testing.assert_allclose(pooled, power @ values, rtol=0, atol=1e-5)


def test_kernel_rounds_like_a_sequential_multiply_then_add():
    """Bit for bit what numpy gives summing each row's terms in stored order: labels cannot drift."""
    op = random_operator(k=16)
    values = np.random.default_rng(1).standard_normal((op.num_voxels, 20)).astype(np.float32)
    state = values[op.order]
    for _ in range(op.iterations):
        total = np.zeros_like(state)
        for j in range(op.neighbours.shape[1]):
            total = total + op.weights[:, j, None] * state[op.neighbours[:, j]]
        state = total
    expected = np.empty_like(state)
    expected[op.order] = state
    np.testing.assert_array_equal(op.propagate(values), expected)


def test_thread_count_does_not_change_the_result():
    values = np.random.default_rng(2).standard_normal((700, 20)).astype(np.float32)
    one, two = random_operator(), random_operator()
    one.threads, two.threads = 1, 2
    np.testing.assert_array_equal(one.propagate(values), two.propagate(values))


def local_operator(iterations: int) -> PoolingOperator:
    """A sparse (K=6) graph on 3,000 random points whose few-hop regions cover part of the map."""
    op = random_operator(n=3000, k=6, seed=4)
    op.iterations = iterations
    return op


@pytest.mark.parametrize("width", [1, 20, 40])
def test_region_plan_reproduces_the_whole_map_at_its_rows(width):
    """An update recomputes only a region (16 + 4 lanes at 20 columns, two groups at 40): its outputs
    must be the whole map's, bit for bit."""
    op = local_operator(iterations=4)
    values = np.random.default_rng(5).standard_normal((3000, width)).astype(np.float32)
    plan = op.region(np.array([7, 8, 2900]))  # operator (Morton) rows
    rows = op.order[[7, 8, 2900]]
    assert sorted(plan.rows) == sorted(rows) and set(rows) <= set(plan.support)
    assert len(plan.support) < 3000 and not len(plan.boundary)
    np.testing.assert_array_equal(plan.propagate(values[plan.support]), op.propagate(values)[plan.rows])


def test_cut_short_region_holds_its_boundary():
    """With ``hops`` < iterations, each support voxel is updated while it can still reach an output
    and the boundary one hop beyond is held at the caller's values (float64 dense reference)."""
    op, hops = local_operator(iterations=5), 2
    rng = np.random.default_rng(6)
    plan = op.region(np.array([7, 8]), hops=hops)
    values = rng.standard_normal((len(plan.support), 3)).astype(np.float32)
    held = rng.standard_normal((len(plan.boundary), 3)).astype(np.float32)
    a = op.matrix.toarray()
    level = np.full(3000, -1)
    level[op.order[[7, 8]]] = 0
    for hop in range(1, hops + 2):
        level[(a[level == hop - 1] > 0).any(axis=0) & (level < 0)] = hop
    assert sorted(plan.support) == sorted(np.flatnonzero((level >= 0) & (level <= hops)))
    assert sorted(plan.boundary) == sorted(np.flatnonzero(level == hops + 1))
    state = np.zeros((3000, 3))
    state[plan.support], state[plan.boundary] = values, held
    for step in range(1, op.iterations + 1):
        updated = (level >= 0) & (level <= min(hops, op.iterations - step))
        state[updated] = (a @ state)[updated]
    np.testing.assert_allclose(plan.propagate(values, held), state[plan.rows], rtol=1e-4, atol=1e-5)


def test_warm_up_leaves_no_width_to_compile():
    """A robot's first vocabulary change, whatever its size, must not wait for the compiler."""
    assert warm_up() >= 0.0
    compiled = len(_propagate_rows.signatures) + len(_propagate_rows_split.signatures)
    op = random_operator(n=50, k=4)
    for width in range(1, 70):
        np.testing.assert_allclose(op.propagate(np.ones((50, width), np.float32)), 1.0, rtol=1e-5)
    assert len(_propagate_rows.signatures) + len(_propagate_rows_split.signatures) == compiled


@pytest.mark.parametrize("dtype", [np.int32, np.float32, np.float64])
def test_rows_move_in_place_as_a_copy_would_move_them(dtype):
    """Voxels inserted into and evicted from the voxel order: kept rows move up and down, in place."""
    rng = np.random.default_rng(3)
    array = rng.integers(0, 1000, (300, 5)).astype(dtype)
    sources = np.sort(rng.choice(300, 180, replace=False))
    targets = np.sort(rng.choice(320, 180, replace=False))  # ascending, some rows down, some up
    assert (targets < sources).any() and (targets > sources).any()
    buffer = np.zeros((320, 5), dtype=dtype)
    buffer[:300] = array
    move_rows(buffer, sources, targets)
    np.testing.assert_array_equal(buffer[targets], array[sources])


def test_renumbered_neighbours_stay_ascending_and_lost_ones_are_flagged():
    rng = np.random.default_rng(4)
    neighbours = np.sort(rng.choice(250, (40, 8)), axis=1).astype(np.int32)
    rank_map = np.full(250, -1, dtype=np.int32)
    kept = np.sort(rng.choice(250, 230, replace=False))
    rank_map[kept] = np.sort(rng.choice(400, 230, replace=False))
    renumbered, lost = neighbours.copy(), np.zeros(40, dtype=bool)
    renumber_neighbours(renumbered, np.arange(40), rank_map, lost)
    mapped = rank_map[neighbours]
    np.testing.assert_array_equal(lost, (mapped < 0).any(axis=1))
    np.testing.assert_array_equal(renumbered, np.maximum(mapped, 0))
    assert lost.any() and (np.diff(renumbered[~lost], axis=1) >= 0).all()


def test_constant_field_stays_constant():
    positions, embeddings, _ = two_planes()
    op = GeometryGuidedPooling().from_embeddings(positions, embeddings)
    field = np.tile([[0.3, -2.0, 5.0]], (len(positions), 1)).astype(np.float32)
    np.testing.assert_allclose(op.propagate(field), field, rtol=1e-4)


def test_feature_and_logit_paths_give_identical_labels():
    rng = np.random.default_rng(1)
    positions, embeddings, labels = two_planes()
    text = rng.standard_normal((6, 32))
    features = text[labels] + 1.5 * rng.standard_normal((len(labels), 32))
    op = GeometryGuidedPooling().from_embeddings(positions, embeddings)
    feature_path = op.propagate(features) @ text.T
    logit_path = op.propagate(features @ text.T)
    np.testing.assert_allclose(feature_path, logit_path, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(feature_path.argmax(1), logit_path.argmax(1))


def test_student_affinity_denoises_without_crossing_the_boundary():
    rng = np.random.default_rng(2)
    positions, embeddings, labels = two_planes()
    noisy = np.where(rng.random(len(labels)) < 0.35, 1 - labels, labels)
    onehot = np.eye(2)[noisy]
    pooled = GeometryGuidedPooling().from_embeddings(positions, embeddings).propagate(onehot).argmax(1)
    assert (noisy == labels).mean() < 0.7
    assert (pooled == labels).mean() > 0.99


def test_geometric_affinity_denoises_real_scan_labels(scan_crop):
    positions, colors, gt = scan_crop
    rng = np.random.default_rng(3)
    valid = gt != IGNORE_INDEX
    classes = np.unique(gt[valid])
    noisy = gt.copy()
    flip = valid & (rng.random(len(gt)) < 0.3)
    noisy[flip] = rng.choice(classes, flip.sum())
    onehot = np.zeros((len(gt), 20), dtype=np.float32)
    onehot[valid, noisy[valid]] = 1.0
    op = GeometryGuidedPooling(PoolingConfig(k=32, iterations=5)).from_geometry(positions, colors)
    pooled = op.propagate(onehot).argmax(1)
    before = (noisy[valid] == gt[valid]).mean()
    after = (pooled[valid] == gt[valid]).mean()
    assert after > before + 0.15, (before, after)


def test_fewer_voxels_than_k_use_all_others():
    positions, _, _ = two_planes(n_side=3)
    op = GeometryGuidedPooling().from_geometry(positions)
    assert (np.diff(op.matrix.indptr) == len(positions) - 1).all()
    np.testing.assert_allclose(np.asarray(op.matrix.sum(axis=1)).ravel(), 1.0, rtol=1e-5)


def test_single_voxel_keeps_its_value_and_zero_iterations_is_identity():
    op = GeometryGuidedPooling().from_embeddings(np.zeros((1, 3)), np.ones((1, 4)))
    np.testing.assert_array_equal(op.propagate(np.array([[2.0, 3.0]])), [[2.0, 3.0]])
    positions, embeddings, _ = two_planes(n_side=5)
    values = np.random.default_rng(0).random((len(positions), 3))
    op = GeometryGuidedPooling(PoolingConfig(iterations=0)).from_embeddings(positions, embeddings)
    np.testing.assert_allclose(op.propagate(values), values)


def test_morton_order_is_a_permutation_that_keeps_neighbours_close():
    positions, _, _ = two_planes()
    order = morton_order(positions)
    assert sorted(order.tolist()) == list(range(len(positions)))
    step = np.linalg.norm(np.diff(positions[order], axis=0), axis=1)
    shuffled = np.linalg.norm(np.diff(positions[np.random.default_rng(0).permutation(len(positions))], axis=0), axis=1)
    assert np.median(step) < 0.25 * np.median(shuffled)


def test_bad_input_raises_pooling_error():
    pooling = GeometryGuidedPooling()
    positions, embeddings, _ = two_planes(n_side=4)
    with pytest.raises(PoolingError, match="empty"):
        pooling.from_embeddings(np.zeros((0, 3)), np.zeros((0, 8)))
    with pytest.raises(PoolingError, match="NaN"):
        bad = embeddings.copy()
        bad[3, 1] = np.nan
        pooling.from_embeddings(positions, bad)
    with pytest.raises(PoolingError, match="NaN"):
        bad = positions.copy()
        bad[0, 0] = np.inf
        pooling.from_geometry(bad)
    with pytest.raises(PoolingError, match="shape"):
        pooling.from_embeddings(positions, embeddings[:-1])
    with pytest.raises(PoolingError, match="N x 3"):
        pooling.from_geometry(positions[:, :2])
    op = pooling.from_embeddings(positions, embeddings)
    with pytest.raises(PoolingError, match="finite"):
        op.propagate(np.full((len(positions), 2), np.nan))
    with pytest.raises(PoolingError, match="shape"):
        op.propagate(np.zeros((len(positions) + 1, 2)))
    # The kernel reads neighbour rows unchecked, so a bad operator must not be constructible.
    with pytest.raises(PoolingError, match="out of range"):
        PoolingOperator(op.neighbours + 1, op.weights, op.order, op.iterations)
    with pytest.raises(PoolingError, match="N x K"):
        PoolingOperator(op.neighbours, op.weights[:, :-1], op.order, op.iterations)
