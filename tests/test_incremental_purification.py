"""Incremental purification: a map grown, relifted, evicted and reset step by step, purified after each step,
against a full rebuild (``purify(force=True)``) of a copy of the same map.

Real data: rendered views of ScanNet scene0000_00 (features from the noisy oracle, as tests/test_segmenter.py)
and the shipped geometry-only student. The copy is a fresh :class:`SceneMap` (``subset`` of every slot),
so its normals are estimated from scratch too.
"""

from __future__ import annotations

import numpy as np
import pytest

from ovseg3d_core import geometry
from ovseg3d_core.data.scenes.rendering import generate_trajectory, render_views
from ovseg3d_core.data.scenes.scannet import load_scannet_scan
from ovseg3d_core.encoders.noisy_oracle import NoisyOracleConfig
from ovseg3d_core.geometry import knn
from ovseg3d_core.incremental_purification import _Rows
from ovseg3d_core.purify import pooling
from ovseg3d_core.segmenter import SceneSegmenter, SegmenterConfig

VOCABULARY = ["wall", "floor", "chair", "table", "sofa", "cabinet"]


@pytest.fixture(scope="module")
def frames():
    scan = load_scannet_scan()
    poses = generate_trajectory(scan, 9, seed=3)
    return render_views(scan, scan.scannet20_ids, poses, vertex_instances=scan.instance_ids)


def config(mode: str = "geometric", **overrides) -> SegmenterConfig:
    values = {
        "purification": mode,
        "scene": {"voxel_size": 0.04},
        # Fewer steps and neighbours than GeoPurify's 19 and 96, so that a frame's region of
        # influence is a part of this small map (the code paths are the same).
        "pooling": {"k": 24, "iterations": 8},
        "encoders": {"dense": "noisy_oracle", "noisy_oracle": NoisyOracleConfig.preset("low").rates()},
    }
    for key, value in overrides.items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    return SegmenterConfig.from_dict(values)


def rebuilt(reference: SceneSegmenter, segmenter: SceneSegmenter, vocabulary=VOCABULARY):
    """The reference segmenter's labeling of a fresh copy of ``segmenter``'s map, purified from scratch."""
    reference.scene = segmenter.scene.subset(np.arange(len(segmenter.scene)))
    assert reference.purify(force=True).kind == "full"
    return reference.label(vocabulary)


def assert_identical(segmenter: SceneSegmenter, reference: SceneSegmenter, vocabulary=VOCABULARY) -> None:
    expected = rebuilt(reference, segmenter, vocabulary)
    labeling = segmenter.label(vocabulary)
    np.testing.assert_array_equal(segmenter.scene.normals(), reference.scene.normals())
    np.testing.assert_array_equal(labeling.labels, expected.labels)
    np.testing.assert_array_equal(labeling.scores, expected.scores)
    np.testing.assert_array_equal(segmenter.labeler.class_scores(), reference.labeler.class_scores())


@pytest.mark.parametrize("path", ["logit", "feature"])
def test_geometric_updates_are_bit_identical_to_a_full_rebuild(frames, path):
    segmenter = SceneSegmenter(config(labeling={"path": path}))
    reference = SceneSegmenter(segmenter.config)
    kinds, smaller = [], False
    for index, frame in enumerate(frames):
        segmenter.add_frame(frame, keyframe=index % 2 == 0)  # geometry every frame, features every other
        if index < 2:
            continue
        segmenter.label(VOCABULARY)
        report = segmenter.last_purify
        kinds.append(report.kind)
        smaller |= report.kind == "incremental" and report.region_voxels < 0.5 * report.voxels
        assert_identical(segmenter, reference)
    assert kinds[0] == "full" and set(kinds[1:]) == {"incremental"}, kinds
    assert smaller  # some update recomputed the scores of less than half of the map


def test_student_updates_match_a_full_rebuild(frames):
    """Default (exact) settings: measured bit-identical embeddings, scores and labels; approximate settings
    (hops 4, student_radius 8) measured at 100% identical labels, embeddings within 5e-3."""
    exact = SceneSegmenter(config("student_geometric"))
    approximate = SceneSegmenter(config("student_geometric", incremental={"hops": 4, "student_radius": 8}))
    reference = SceneSegmenter(exact.config)
    for index, frame in enumerate(frames[:6]):
        for segmenter in (exact, approximate):
            segmenter.add_frame(frame, keyframe=index % 2 == 0)
        if index < 3:
            continue
        expected = rebuilt(reference, exact)
        for segmenter, agreement, embedding_error in ((exact, 1.0, 0.0), (approximate, 0.999, 0.01)):
            labeling = segmenter.label(VOCABULARY)
            if index > 3:
                assert segmenter.last_purify.kind == "incremental"
            difference = np.abs(segmenter.purifier.embeddings - reference.purifier.embeddings).max()
            assert difference <= embedding_error, difference
            assert (labeling.labels == expected.labels).mean() >= agreement
        np.testing.assert_array_equal(exact.labeler.class_scores(), reference.labeler.class_scores())


def test_eviction_goes_through_the_update(frames):
    probe = SceneSegmenter(config())
    for frame in frames[:4]:
        probe.add_frame(frame)
    cap = len(probe.scene) + 2000  # the next frames push the map over it
    # A frame adds and evicts thousands of voxels on this small map: let the update take up to 90%.
    overrides = {"scene": {"max_voxels": cap, "eviction_headroom": 0.05}, "incremental": {"max_changed_fraction": 0.9}}
    segmenter = SceneSegmenter(config(**overrides))
    reference = SceneSegmenter(segmenter.config)
    evicted = False
    for index, frame in enumerate(frames):
        layout = segmenter.scene.layout
        segmenter.add_frame(frame)
        if index < 3:
            continue
        segmenter.label(VOCABULARY)
        if segmenter.scene.layout != layout:  # slots were renumbered: voxels were evicted
            evicted = True
            assert segmenter.last_purify.kind == "incremental"
        assert len(segmenter.scene) <= cap
        assert_identical(segmenter, reference)
    assert evicted


def test_reset_and_load_rebuild_then_update_again(frames, tmp_path):
    segmenter = SceneSegmenter(config())
    reference = SceneSegmenter(segmenter.config)
    for frame in frames[:3]:
        segmenter.add_frame(frame)
    segmenter.label(VOCABULARY)
    path = segmenter.save(tmp_path / "scene.npz")
    segmenter.reset()
    for frame in frames[5:7]:
        segmenter.add_frame(frame)
    assert segmenter.purify().kind == "full"
    assert_identical(segmenter, reference)
    segmenter.load(path)
    assert segmenter.purify().kind == "full"
    segmenter.add_frame(frames[3])
    assert segmenter.purify().kind == "incremental"
    assert_identical(segmenter, reference)


def test_vocabulary_change_and_query_after_an_update(frames):
    segmenter = SceneSegmenter(config())
    reference = SceneSegmenter(segmenter.config)
    for frame in frames[:3]:
        segmenter.add_frame(frame)
    segmenter.label(VOCABULARY)
    segmenter.add_frame(frames[3])
    segmenter.label(VOCABULARY)  # the cached columns of VOCABULARY are updated in the region...
    assert segmenter.last_purify.kind == "incremental"
    other = ["bed", "door", "floor", "a place to sit"]  # ...new names are pooled over the updated operator
    assert_identical(segmenter, reference, other)
    np.testing.assert_array_equal(segmenter.query("a sofa"), reference.query("a sofa"))


def test_an_update_without_new_voxels_keeps_the_voxel_order(frames):
    """A frame seen again (features re-lifted, voxels re-observed, none added): every kept array is
    updated in place, the pooled class columns included."""
    segmenter = SceneSegmenter(config())
    reference = SceneSegmenter(segmenter.config)
    for frame in frames[:4]:
        segmenter.add_frame(frame)
    segmenter.label(VOCABULARY)
    size, block = len(segmenter.scene), segmenter.labeler._scene.block
    segmenter.add_frame(frames[3])
    segmenter.label(VOCABULARY)
    assert segmenter.last_purify.kind == "incremental" and len(segmenter.scene) == size
    assert segmenter.labeler._scene.block is block  # carried in place, not copied
    assert_identical(segmenter, reference)


def test_warm_up_compiles_every_kernel_of_an_update(frames):
    """The first update of a process (after warm_up, as the segmenter calls it) compiles nothing."""
    kernels = {
        name: getattr(module, name)
        for module in (pooling, geometry)
        for name in dir(module)
        if hasattr(getattr(module, name), "signatures")
    }
    pooling.warm_up()
    compiled = {name: len(kernel.signatures) for name, kernel in kernels.items()}
    # The map outgrows the cap at the fifth frame: updates that append voxels, then one that evicts some.
    overrides = {
        "scene": {"max_voxels": 31000, "eviction_headroom": 0.05},
        "incremental": {"max_changed_fraction": 0.9},
    }
    segmenter = SceneSegmenter(config("student_geometric", **overrides))
    kinds = []
    for index, frame in enumerate(frames[:6]):
        layout = segmenter.scene.layout
        segmenter.add_frame(frame)
        if index >= 2:
            segmenter.label(VOCABULARY)
            kinds.append((segmenter.last_purify.kind, segmenter.scene.layout != layout))
    assert ("incremental", False) in kinds and ("incremental", True) in kinds, kinds
    assert {name: len(kernel.signatures) for name, kernel in kernels.items()} == compiled


def test_kept_rows_grow_in_their_spare_room_and_move_like_copies():
    rng = np.random.default_rng(0)
    array = rng.standard_normal((200, 3))
    rows = _Rows.of(array)
    data = rows.data
    np.testing.assert_array_equal(rows.resize(220)[:200], array)
    assert rows.data is data  # within the spare rows: no copy
    np.testing.assert_array_equal(rows.resize(len(data) + 1)[:200], array)
    assert rows.data is not data and len(rows.data) > len(data)  # past them: one copy with new spare rows
    for ascending in (True, False):  # in place, or gathered into a new buffer
        rows = _Rows.of(array)
        sources = np.sort(rng.choice(200, 150, replace=False))
        targets = np.sort(rng.choice(260, 150, replace=False))
        if not ascending:
            targets = rng.permutation(targets)
        np.testing.assert_array_equal(rows.move(sources, targets, 260)[targets], array[sources])
        assert rows.count == 260


def test_a_change_touching_no_voxel_keeps_the_result(frames):
    segmenter = SceneSegmenter(config())
    for frame in frames[:3]:
        segmenter.add_frame(frame)
    first = segmenter.purify()
    empty = np.zeros(0, dtype=np.int64)
    segmenter.scene.accumulate_features(empty, np.zeros((1, segmenter.scene.feature_dim)), empty)
    assert segmenter.scene.version != segmenter.purifier._state.version  # the map says it changed...
    assert segmenter.purify() is first  # ...but no voxel did
    assert segmenter.purify(force=True).kind == "full"


def test_a_large_change_or_the_switch_off_rebuilds(frames):
    for overrides in ({"max_changed_fraction": 0.0}, {"enabled": False}):
        segmenter = SceneSegmenter(config(incremental=overrides))
        for frame in frames[:3]:
            segmenter.add_frame(frame)
        segmenter.purify()
        segmenter.add_frame(frames[3])
        assert segmenter.purify().kind == "full"


def test_knn_rows_are_the_full_graph_rows(frames):
    segmenter = SceneSegmenter(config())
    for frame in frames[:2]:
        segmenter.add_frame(frame, keyframe=False)
    points = np.floor(segmenter.scene.positions() / 0.01) * 0.01  # on a grid: many equidistant neighbours
    distances, neighbours = knn(points, 24, exclude_self=True)
    rows = np.random.default_rng(0).choice(len(points), 500, replace=False)
    for backend in ("auto", "kdtree"):
        row_distances, row_neighbours = knn(points, 24, exclude_self=True, rows=rows, backend=backend)
        np.testing.assert_array_equal(row_neighbours, neighbours[rows])
        np.testing.assert_array_equal(row_distances, distances[rows])
