"""SceneSegmenter: rendered ScanNet views + noisy oracle -> labeled voxels, vocabulary changes, queries."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from ovseg3d_core.config import ConfigError
from ovseg3d_core.data.scenes.rendering import generate_trajectory, render_views
from ovseg3d_core.data.scenes.scannet import IGNORE_INDEX, SCANNET20_CLASSES, load_scannet_scan
from ovseg3d_core.encoders.noisy_oracle import NoisyOracleConfig
from ovseg3d_core.segmenter import SceneSegmenter, SegmenterConfig, SegmenterError


@pytest.fixture(scope="module")
def scan():
    return load_scannet_scan()


@pytest.fixture(scope="module")
def frames(scan):
    poses = generate_trajectory(scan, 6, seed=3)
    return render_views(scan, scan.scannet20_ids, poses, vertex_instances=scan.instance_ids)


@pytest.fixture(scope="module")
def segmenter(frames):
    config = SegmenterConfig.from_dict(
        {
            "purification": "geometric",
            "scene": {"voxel_size": 0.04},
            "pooling": {"k": 16, "iterations": 4},
            # The pipeline's correctness, not the calibrated error level (benchmarks measure that): low noise.
            "encoders": {"dense": "noisy_oracle", "noisy_oracle": NoisyOracleConfig.preset("low").rates()},
        }
    )
    segmenter = SceneSegmenter(config)
    for frame in frames:
        segmenter.add_frame(frame, keyframe=True)
    return segmenter


def ground_truth(scan, positions: np.ndarray) -> np.ndarray:
    _, nearest = cKDTree(scan.vertices).query(positions)
    return scan.scannet20_ids[nearest]


def test_labels_agree_with_the_annotation(scan, segmenter):
    labeling = segmenter.label(list(SCANNET20_CLASSES))
    gt = ground_truth(scan, segmenter.scene.positions())
    annotated = gt != IGNORE_INDEX
    assert annotated.sum() > 1000
    accuracy = (labeling.labels[annotated] == gt[annotated]).mean()
    assert accuracy > 0.6, accuracy  # chance over 20 classes is 0.05
    assert segmenter.keyframes == 6 and segmenter.last_purify.mode == "geometric"


def test_free_text_vocabulary_and_query_follow_the_text_space(scan, segmenter):
    gt = ground_truth(scan, segmenter.scene.positions())
    labeling = segmenter.label(["couch", "floor", "wall"])
    sofa = gt == SCANNET20_CLASSES.index("sofa")
    assert sofa.sum() > 50
    assert (labeling.labels[sofa] == 0).mean() > 0.5  # "couch" finds the points annotated sofa
    scores = segmenter.query("a sofa")
    top = np.argsort(-scores)[: sofa.sum()]
    assert sofa[top].mean() > 0.5  # the best-scoring voxels are mostly the annotated sofa (it is ~10% of the map)
    with pytest.raises(SegmenterError, match="empty"):
        segmenter.query("  ")


def test_bad_vocabulary_keeps_the_previous_one(segmenter):
    segmenter.set_vocabulary(["chair", "table"])
    for bad in ([], ["chair", "chair"], [""]):
        with pytest.raises(ValueError):
            segmenter.set_vocabulary(bad)
    assert segmenter.vocabulary == ("chair", "table")


def test_purify_is_cached_until_the_map_changes(segmenter, frames):
    first = segmenter.purify()
    assert segmenter.purify() is first
    segmenter.add_frame(frames[0], keyframe=False)
    again = segmenter.purify()
    assert again is not first and "jit_ms" not in again.timings  # the first purify compiled the kernels


def test_save_reset_load_round_trip(segmenter, tmp_path):
    path = segmenter.save(tmp_path / "scene.npz")
    before = segmenter.label(["wall", "floor"]).labels
    voxels = len(segmenter.scene)
    segmenter.reset()
    assert len(segmenter.scene) == 0
    with pytest.raises(SegmenterError, match="empty"):
        segmenter.purify()
    segmenter.load(path)
    assert len(segmenter.scene) == voxels
    np.testing.assert_array_equal(segmenter.label(["wall", "floor"]).labels, before)


def test_a_missing_student_checkpoint_is_a_config_error(tmp_path):
    missing = tmp_path / "no-such-student.pt"
    for mode in ("student", "student_geometric"):
        with pytest.raises(ConfigError, match=f"student_checkpoint: {missing} not found.*purification: {mode}"):
            SegmenterConfig(purification=mode, student_checkpoint=str(missing))
    SegmenterConfig(purification="geometric", student_checkpoint=str(missing))  # unused by this mode


def test_student_purifications_run_the_shipped_student(frames):
    from ovseg3d_core.purify.pooling import GeometryGuidedPooling
    from ovseg3d_core.purify.student import SHIPPED_CHECKPOINT

    assert SHIPPED_CHECKPOINT.is_file(), "the geometry-only student checkpoint must ship with the package"
    operators = {}
    for mode in ("student", "student_geometric"):
        config = SegmenterConfig.from_dict(
            {
                "purification": mode,
                "scene": {"voxel_size": 0.05},
                "pooling": {"k": 16, "iterations": 4},
                "encoders": {"dense": "noisy_oracle"},
            }
        )
        segmenter = SceneSegmenter(config)
        for frame in frames[:3]:
            segmenter.add_frame(frame)
        labeling = segmenter.label(["wall", "floor", "table"])
        assert segmenter.last_purify.mode == mode and segmenter.last_purify.student_ms > 0
        assert segmenter.last_purify.timings["jit_ms"] > 0  # pooling kernels warmed before the first label
        assert len(labeling.labels) == len(segmenter.scene)
        assert set(np.unique(labeling.labels)) <= {0, 1, 2, 3}
        operators[mode], _ = segmenter.pooling_operator()
    scene = segmenter.scene
    embeddings = segmenter.student_embeddings()
    pooling = GeometryGuidedPooling(config.pooling)
    expected = {
        "student": pooling.from_embeddings(scene.positions(), embeddings),
        "student_geometric": pooling.from_embeddings_and_geometry(
            scene.positions(), embeddings, scene.colors(), scene.normals()
        ),
    }
    for mode, operator in operators.items():
        np.testing.assert_allclose(operator.matrix.toarray(), expected[mode].matrix.toarray(), atol=1e-6)
    assert np.abs(operators["student"].matrix - operators["student_geometric"].matrix).max() > 0.05


def test_a_broken_student_file_is_read_once_until_it_changes(frames, tmp_path, monkeypatch):
    """A node purifies periodically: a corrupt checkpoint must fail fast, and a replaced one must load."""
    import ovseg3d_core.purify.student as student_module

    path = tmp_path / "student.pt"
    path.write_bytes(b"not a checkpoint")
    reads = []
    real_load = student_module.load_student
    monkeypatch.setattr(student_module, "load_student", lambda p=None: reads.append(p) or real_load(p))
    config = SegmenterConfig.from_dict(
        {
            "purification": "student",
            "student_checkpoint": str(path),
            "scene": {"voxel_size": 0.05},
            "pooling": {"k": 16, "iterations": 4},
            "encoders": {"dense": "noisy_oracle"},
        }
    )
    segmenter = SceneSegmenter(config)
    segmenter.add_frame(frames[0])
    errors = []
    for _ in range(3):
        with pytest.raises(student_module.StudentCheckpointError, match="not a readable student checkpoint") as error:
            segmenter.purify(force=True)
        errors.append(error.value)
    assert len(reads) == 1 and errors[0] is errors[1] is errors[2]
    path.write_bytes(student_module.SHIPPED_CHECKPOINT.read_bytes())
    report = segmenter.purify(force=True)
    assert len(reads) == 2 and report.mode == "student" and report.student_ms > 0


def test_the_encoder_prompt_setting_reaches_labels_and_queries():
    from ovseg3d_core.encoders.minilm import MiniLMTextEncoder

    config = SegmenterConfig.from_dict(
        {"encoders": {"dense": "noisy_oracle", "prompts": {"template": "a photo of a {}"}}, "vocabulary": ["sofa"]}
    )
    segmenter = SceneSegmenter(config)
    expected = MiniLMTextEncoder().encode(["a photo of a sofa"])
    np.testing.assert_allclose(segmenter.labeler.text_embeddings, expected, atol=1e-6)
    oracle_space = segmenter.feature_source.class_embeddings[SCANNET20_CLASSES.index("sofa")]
    np.testing.assert_allclose(oracle_space, expected[0], atol=1e-6)  # 2D features share the prompt space
