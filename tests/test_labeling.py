"""Labeling with the real MiniLM text encoder: labels, background, both pooling paths, vocabulary changes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ovseg3d_core.encoders.minilm import MiniLMTextEncoder
from ovseg3d_core.labeling import Labeler, LabelingConfig, LabelingError
from ovseg3d_core.purify.pooling import GeometryGuidedPooling, PoolingConfig

VOCABULARY = ("chair", "table", "floor", "wall")


@pytest.fixture(scope="module")
def encoder() -> MiniLMTextEncoder:
    return MiniLMTextEncoder()


@pytest.fixture
def labeler(encoder) -> Labeler:
    return Labeler(encoder, vocabulary=VOCABULARY)


def grid_scene(labeler: Labeler, noise: float, seed: int = 0):
    """A 30 x 30 grid split into four class quadrants, features = class prompt embedding + noise."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.arange(30), np.arange(30))
    positions = np.stack([u.ravel(), v.ravel(), np.zeros(u.size)], axis=1) * 0.02
    truth = (u.ravel() >= 15).astype(int) + 2 * (v.ravel() >= 15).astype(int)
    features = labeler.text_embeddings[truth] + noise * rng.standard_normal((len(truth), labeler.encoder.dim))
    embeddings = np.eye(4)[truth]
    return positions, features.astype(np.float32), truth, embeddings


def test_prompt_embeddings_label_their_own_class(labeler, encoder):
    prompts = encoder.encode([f"a {name} in a scene" for name in VOCABULARY])
    np.testing.assert_allclose(labeler.text_embeddings, prompts, atol=1e-5)
    labeler.set_scene(prompts[[2, 0, 3, 1]])
    result = labeler.label()
    np.testing.assert_array_equal(result.labels, [2, 0, 3, 1])
    np.testing.assert_allclose(result.scores, 1.0, atol=1e-5)
    assert result.background_index == 4 and result.vocabulary == VOCABULARY
    # Free-text queries score like vocabulary entries.
    np.testing.assert_allclose(labeler.class_scores(["table"])[:, 0], labeler.class_scores()[:, 1], atol=1e-6)


def test_synonym_features_pick_the_related_class(labeler, encoder):
    texts = ["a wooden stool", "a coffee table", "the carpet on the ground", "a painted plaster surface"]
    labeler.set_scene(encoder.encode(texts))
    assert [VOCABULARY[i] for i in labeler.label().labels] == ["chair", "table", "floor", "wall"]


def test_unobserved_and_low_score_voxels_are_background(encoder):
    labeler = Labeler(encoder, LabelingConfig(min_score=0.3), vocabulary=VOCABULARY)
    chair = labeler.text_embeddings[0]
    orthogonal = np.zeros(encoder.dim, dtype=np.float32)
    orthogonal[np.argsort(np.abs(labeler.text_embeddings).sum(0))[:1]] = 1.0  # direction far from every class
    labeler.set_scene(np.stack([chair, np.zeros_like(chair), -chair, orthogonal]))
    result = labeler.label()
    assert result.labels[0] == 0
    assert (result.labels[1:] == result.background_index).all()
    assert result.counts().tolist() == [1, 0, 0, 0, 3]


def test_pooling_fills_unobserved_voxels_and_removes_noise(labeler):
    positions, features, truth, embeddings = grid_scene(labeler, noise=0.4)
    features[::7] = 0.0  # voxels no camera saw
    op = GeometryGuidedPooling(PoolingConfig(k=24)).from_embeddings(positions, embeddings)
    labeler.set_scene(features)
    raw = labeler.label()
    labeler.set_scene(features, op)
    pooled = labeler.label()
    assert (raw.labels[::7] == raw.background_index).all()
    assert (raw.labels == truth).mean() < 0.8
    assert (pooled.labels == truth).all()


def test_logit_and_feature_paths_agree(encoder):
    results = {}
    for path in ("logit", "feature"):
        labeler = Labeler(encoder, LabelingConfig(path=path), vocabulary=VOCABULARY)
        positions, features, _, _ = grid_scene(labeler, noise=0.5, seed=4)
        features[::7] = 0.0  # unobserved voxels: the logit path pools coverage with the class columns
        op = GeometryGuidedPooling(PoolingConfig(k=16)).from_geometry(positions)
        labeler.set_scene(features, op)
        results[path] = labeler.label()
    np.testing.assert_array_equal(results["logit"].labels, results["feature"].labels)
    np.testing.assert_allclose(results["logit"].scores, results["feature"].scores, atol=1e-4)


def test_vocabulary_change_reuses_pooled_columns(labeler):
    positions, features, _, embeddings = grid_scene(labeler, noise=0.05)
    features[::9] = 0.0  # unobserved voxels make the coverage column necessary
    op = GeometryGuidedPooling(PoolingConfig(k=16)).from_embeddings(positions, embeddings)
    propagated_widths = []
    propagate = op.propagate
    op.propagate = lambda values: propagated_widths.append(np.atleast_2d(values.T).shape[0]) or propagate(values)
    labeler.set_scene(features, op)
    first = labeler.label()
    labeler.set_vocabulary(["wall", "sofa", "chair", "table", "floor"])
    second = labeler.label()
    # The first vocabulary (4) with the coverage column in the same pass, then only the new class "sofa" (1).
    assert propagated_widths == [5, 1]
    labeler.set_scene(features + 0.01, op)  # every voxel observed: coverage is exactly one, not propagated
    labeler.label()
    assert propagated_widths[2:] == [5]
    remap = np.array([2, 3, 4, 0])  # old index -> new index
    np.testing.assert_array_equal(remap[first.labels], second.labels)


def test_failed_vocabulary_change_keeps_the_previous_one(labeler):
    for bad, message in (
        ([], "empty"),
        (["chair", " "], "non-empty"),
        (["chair", "chair"], "repeats"),
        ("chair", "single string"),
        ([f"class {i}" for i in range(600)], "max_vocabulary"),
    ):
        with pytest.raises(LabelingError, match=message):
            labeler.set_vocabulary(bad)
        assert labeler.vocabulary == VOCABULARY


def test_bad_scenes_are_rejected(labeler, encoder):
    with pytest.raises(LabelingError, match="no scene"):
        labeler.label()
    labeler.set_scene(np.ones((2, encoder.dim)))
    with pytest.raises(LabelingError, match="encode"):
        labeler.class_scores(["chair", ""])
    with pytest.raises(LabelingError, match="NaN"):
        labeler.set_scene(np.full((3, encoder.dim), np.nan))
    with pytest.raises(LabelingError, match="non-empty"):
        labeler.set_scene(np.zeros((0, encoder.dim)))
    with pytest.raises(LabelingError, match="384-d"):
        labeler.set_scene(np.ones((3, 16)))
    positions, features, _, embeddings = grid_scene(labeler, noise=0.0)
    op = GeometryGuidedPooling(PoolingConfig(k=8)).from_embeddings(positions[:10], embeddings[:10])
    with pytest.raises(LabelingError, match="operator"):
        labeler.set_scene(features, op)
    with pytest.raises(LabelingError, match="no vocabulary"):
        empty = Labeler(encoder)
        empty.set_scene(features)
        empty.label()


def test_relabeling_a_purified_scene_is_fast(labeler):
    rng = np.random.default_rng(5)
    features = rng.standard_normal((20000, labeler.encoder.dim)).astype(np.float32)
    labeler.set_scene(features)
    labeler.label()
    start = time.perf_counter()
    labeler.set_vocabulary(["sofa", "bed", "lamp", "door", "window"])
    labeler.label()
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("path", ["logit", "feature"])
@pytest.mark.parametrize("added", [0, 60])
@pytest.mark.parametrize("unobserved", [True, False])
def test_an_update_in_the_same_voxel_order_matches_set_scene(encoder, path, added, unobserved):
    """Old voxels keep their indices (new ones appended): the pooled arrays are carried without a gather
    (in place when no voxel was added), and the result is set_scene's, bit for bit."""
    config = LabelingConfig(path=path)
    labeler, reference = Labeler(encoder, config, VOCABULARY), Labeler(encoder, config, VOCABULARY)
    positions, features, _, embeddings = grid_scene(labeler, noise=0.5, seed=6)
    if unobserved:
        features[::7] = 0.0  # coverage is pooled (with the first class columns), else exactly one
    pooling = GeometryGuidedPooling(PoolingConfig(k=8, iterations=4))
    old = len(features) - added
    labeler.set_scene(features[:old].copy(), pooling.from_embeddings(positions[:old], embeddings[:old]))
    handed_out = labeler.class_scores()
    kept = handed_out.copy()
    features[100:130] += 0.3 * labeler.text_embeddings[1]
    operator = pooling.from_embeddings(positions, embeddings)
    previous = np.r_[np.arange(old), np.full(added, -1)]
    plan = operator.region(np.arange(len(features)))  # every row: the test is about the carried arrays
    labeler.update_scene(features, operator, plan, previous, np.arange(100, 130))
    reference.set_scene(features, operator)
    np.testing.assert_array_equal(labeler.class_scores(), reference.class_scores())
    np.testing.assert_array_equal(labeler.label().labels, reference.label().labels)
    np.testing.assert_array_equal(handed_out, kept)  # scores handed out earlier are not the carried arrays
