"""The noisy oracle (simulated 2D VLM features for benchmarks): determinism, failure rates, semantics.

Per-view behaviour is tested on the ``independent`` preset (per-view errors only); the per-object
errors, which follow an object through every view, have tests of their own.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from ovseg3d_core.config import ConfigError
from ovseg3d_core.data.scenes.scannet import IGNORE_INDEX, SCANNET20_CLASSES
from ovseg3d_core.encoders.base import EncoderError, FrameFeatureSource
from ovseg3d_core.encoders.minilm import MiniLMTextEncoder
from ovseg3d_core.encoders.noisy_oracle import (
    DEFAULT_SEVERITY,
    ERROR_MIXES,
    NOISE_PRESETS,
    NoisyOracle,
    NoisyOracleConfig,
    mixed_rates,
)
from ovseg3d_core.encoders.prompts import PromptedTextEncoder
from ovseg3d_core.frame import RGBDFrame
from ovseg3d_core.geometry import CameraIntrinsics

BLOCK = 12
per_view = functools.partial(NoisyOracleConfig.preset, "independent")
ROWS, COLS = 8, 10
CLASSES = list(SCANNET20_CLASSES)


@pytest.fixture(scope="module")
def text_encoder() -> PromptedTextEncoder:
    return PromptedTextEncoder(MiniLMTextEncoder())


def block_labels(shift: int) -> np.ndarray:
    """ROWS x COLS blocks of BLOCK px; 4- and 8-neighbouring blocks always have different classes."""
    rows, cols = np.mgrid[0:ROWS, 0:COLS]
    blocks = (3 * rows + 7 * cols + shift) % len(CLASSES)
    return np.kron(blocks, np.ones((BLOCK, BLOCK), dtype=np.int64)).astype(np.int32)


def test_output_shapes_dtypes_and_validity(text_encoder: PromptedTextEncoder) -> None:
    oracle = NoisyOracle(CLASSES, text_encoder, per_view(stride=4, miss_rate=0.0))
    labels = block_labels(0)
    labels[:BLOCK, :] = IGNORE_INDEX
    view = oracle.extract_labels(labels, view_index=0)
    assert isinstance(oracle, FrameFeatureSource)
    assert view.features.shape == (ROWS * BLOCK // 4, COLS * BLOCK // 4, 384) == (*oracle.output_shape(96, 120), 384)
    assert view.features.dtype == np.float32 and view.valid.dtype == bool
    assert view.class_map.shape == view.valid.shape
    norms = np.linalg.norm(view.features, axis=-1)
    np.testing.assert_allclose(norms[view.valid], 1.0, atol=1e-5)
    assert (norms[~view.valid] == 0).all()
    # the ignored top band has no features apart from what bleeding spills into it
    assert not view.valid[0].any()
    assert np.isnan(view.masked()[~view.valid]).all()


def test_deterministic_per_seed_and_view(text_encoder: PromptedTextEncoder) -> None:
    labels = block_labels(1)
    oracle = NoisyOracle(CLASSES, text_encoder, per_view(seed=7))
    first, again = oracle.extract_labels(labels, 3), oracle.extract_labels(labels, 3)
    np.testing.assert_array_equal(first.features, again.features)
    np.testing.assert_array_equal(first.class_map, again.class_map)
    other_view = oracle.extract_labels(labels, 4)
    other_seed = NoisyOracle(CLASSES, text_encoder, per_view(seed=8)).extract_labels(labels, 3)
    assert not np.array_equal(first.features, other_view.features)
    assert not np.array_equal(first.features, other_seed.features)


def test_features_point_to_the_emitted_class(text_encoder: PromptedTextEncoder) -> None:
    oracle = NoisyOracle(CLASSES, text_encoder, per_view(pixel_noise=0.5, segment_noise=0.2))
    view = oracle.extract_labels(block_labels(2), 0)
    scores = view.features[view.valid] @ oracle.class_embeddings.T
    agreement = (scores.argmax(axis=1) == view.class_map[view.valid]).mean()
    assert agreement > 0.95


def measured_rates(oracle: NoisyOracle, views: int) -> dict[str, float]:
    """Rates read back from the emitted class maps only (not from the oracle's own records)."""
    radius = oracle.config.bleed_pixels
    confused = missed = bled = segments = bleed_checked = 0
    confusion_pairs: list[tuple[int, int]] = []
    for view_index in range(views):
        labels = block_labels(view_index)
        class_map = oracle.extract_labels(labels, view_index, with_features=False).class_map
        emitted = np.empty((ROWS, COLS), dtype=np.int64)
        for r in range(ROWS):
            for c in range(COLS):
                core = class_map[r * BLOCK + radius + 1 : (r + 1) * BLOCK - radius - 1,
                                 c * BLOCK + radius + 1 : (c + 1) * BLOCK - radius - 1]  # fmt: skip
                values = np.unique(core)
                assert len(values) == 1, "a segment's interior must be emitted as one class"
                emitted[r, c] = values[0]
        truth = labels[::BLOCK, ::BLOCK]
        segments += ROWS * COLS
        missed += int((emitted < 0).sum())
        wrong = (emitted >= 0) & (emitted != truth)
        confused += int(wrong.sum())
        confusion_pairs += list(zip(truth[wrong].tolist(), emitted[wrong].tolist(), strict=True))
        for r in range(ROWS):
            for c in range(COLS):
                own = emitted[r, c]
                if own < 0:
                    continue
                # one pixel outside the middle of each edge lies only within reach of this segment's bleeding
                mid_r, mid_c = r * BLOCK + BLOCK // 2, c * BLOCK + BLOCK // 2
                probes = [
                    (dr, dc, (r * BLOCK - 1, mid_c) if dr < 0 else ((r + 1) * BLOCK, mid_c) if dr > 0 else
                     (mid_r, c * BLOCK - 1) if dc < 0 else (mid_r, (c + 1) * BLOCK))
                    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
                ]  # fmt: skip
                usable = [p for dr, dc, p in probes if 0 <= r + dr < ROWS and 0 <= c + dc < COLS
                          and emitted[r + dr, c + dc] != own]  # fmt: skip
                if usable:
                    bleed_checked += 1
                    bled += any(class_map[p] == own for p in usable)
    return {
        "confusion": confused / (segments - missed),
        "miss": missed / segments,
        "bleed": bled / bleed_checked,
        "pairs": confusion_pairs,
    }


@pytest.mark.parametrize("preset", ["low", "high"])
def test_measured_rates_match_the_settings(text_encoder: PromptedTextEncoder, preset: str) -> None:
    config = NoisyOracleConfig.preset(
        preset, stride=1, bleed_pixels=2, seed=1, object_confusion_rate=0.0, object_miss_rate=0.0
    )
    oracle = NoisyOracle(CLASSES, text_encoder, config)
    rates = measured_rates(oracle, views=60)  # 4,800 segments
    assert abs(rates["confusion"] - config.confusion_rate) < 0.02
    assert abs(rates["miss"] - config.miss_rate) < 0.02
    assert abs(rates["bleed"] - config.bleed_rate) < 0.02


def test_confusions_prefer_semantically_close_classes(text_encoder: PromptedTextEncoder) -> None:
    config = per_view(stride=1, confusion_rate=0.5, miss_rate=0.0, bleed_pixels=2, seed=2)
    oracle = NoisyOracle(CLASSES, text_encoder, config)
    pairs = np.array(measured_rates(oracle, views=30)["pairs"])
    cosine = oracle.class_embeddings @ oracle.class_embeddings.T
    np.fill_diagonal(cosine, np.nan)
    ranks = np.argsort(np.argsort(-np.nan_to_num(cosine, nan=-np.inf), axis=1), axis=1)  # 0 = closest class
    chosen = ranks[pairs[:, 0], pairs[:, 1]]
    assert len(pairs) > 500
    assert (chosen < 3).mean() > 0.5  # the 3 closest of 19 other classes take most confusions
    assert (chosen >= 16).mean() < 0.05  # the 3 most distant almost never
    curtain, shower_curtain, toilet = CLASSES.index("curtain"), CLASSES.index("shower curtain"), CLASSES.index("toilet")
    from_curtain = pairs[pairs[:, 0] == curtain, 1]
    assert (from_curtain == shower_curtain).sum() > (from_curtain == toilet).sum()


def test_sofa_query_finds_what_the_oracle_labelled_couch(text_encoder: PromptedTextEncoder) -> None:
    dataset_names = ["wall", "floor", "couch", "toilet", "table", "bed"]
    oracle = NoisyOracle(dataset_names, text_encoder, per_view(seed=3))
    labels = np.kron(np.array([[0, 1, 2], [3, 4, 5], [2, 0, 2]]), np.ones((40, 40), dtype=np.int64)).astype(np.int32)
    couch_points, toilet_points = [], []
    for view_index in range(10):
        view = oracle.extract_labels(labels, view_index)
        couch_points.append(view.features[view.valid & (view.class_map == 2)])
        toilet_points.append(view.features[view.valid & (view.class_map == 3)])
    couch, toilet = np.concatenate(couch_points), np.concatenate(toilet_points)
    query_vocabulary = ["sofa", "toilet", "table", "wall", "floor", "bed"]
    query = text_encoder.encode(query_vocabulary)
    assert len(couch) > 1000
    assert ((couch @ query.T).argmax(axis=1) == 0).mean() > 0.9
    assert (couch @ query[0]).mean() > (toilet @ query[0]).mean() + 0.2


def test_missed_segments_have_no_features(text_encoder: PromptedTextEncoder) -> None:
    oracle = NoisyOracle(CLASSES, text_encoder, per_view(miss_rate=1.0, stride=2))
    view = oracle.extract_labels(block_labels(0), 0)
    assert not view.valid.any() and (view.features == 0).all()
    assert all(segment.missed for segment in view.segments)


def test_bleeding_width_follows_the_setting(text_encoder: PromptedTextEncoder) -> None:
    config = per_view(stride=1, bleed_rate=1.0, bleed_pixels=3, miss_rate=0.0, confusion_rate=0.0)
    oracle = NoisyOracle(["wall", "chair"], text_encoder, config)
    labels = np.zeros((40, 40), dtype=np.int32)
    labels[10:30, 10:30] = 1
    labels[:, :2] = IGNORE_INDEX
    class_map = oracle.extract_labels(labels, 0, with_features=False).class_map
    # both segments bleed 3 px across their common boundary: the labels swap in a 3 px band on each side
    row = class_map[20]
    assert (row[7:10] == 1).all() and row[6] == 0  # chair spilled 3 px into the wall
    assert (row[10:13] == 0).all() and row[13] == 1  # wall spilled 3 px into the chair
    assert (class_map[:, :2] == 0).all()  # and into the ignored band beside it


def test_presets_order_the_noise_levels() -> None:
    low, default, high = (NoisyOracleConfig.preset(name) for name in ("low", "default", "high"))
    fields = ("confusion_rate", "miss_rate", "bleed_rate", "bleed_pixels", "pixel_noise", "segment_noise")
    for field in (*fields, "object_confusion_rate"):
        assert getattr(low, field) < getattr(default, field) < getattr(high, field), field
    assert low.object_miss_rate <= default.object_miss_rate <= high.object_miss_rate
    independent = NoisyOracleConfig.preset("independent")
    assert independent.object_confusion_rate == independent.object_miss_rate == 0  # the earlier default
    assert NoisyOracleConfig() == default and default.preset_name == "default"
    assert NoisyOracleConfig(seed=9).preset_name == "default" and high.replace(miss_rate=0.5).preset_name == "custom"
    assert "preset high (per object: confusion 0.3, miss 0.05; per view: confusion 0.3, miss 0.2" in high.describe()
    assert NoisyOracleConfig.preset("high", seed=4).seed == 4
    with pytest.raises(ConfigError, match="unknown noisy-oracle preset"):
        NoisyOracleConfig.preset("extreme")


def test_error_mixes_scale_linearly_with_severity() -> None:
    assert mixed_rates(1.0) == NOISE_PRESETS["high"] and mixed_rates(DEFAULT_SEVERITY) == NOISE_PRESETS["default"]
    assert all(value == 0 for value in mixed_rates(0.0, "per_object").values())
    half = mixed_rates(0.5, "per_view")
    assert half["object_confusion_rate"] == half["object_miss_rate"] == 0
    assert half["confusion_rate"] == 0.5 * ERROR_MIXES["per_view"]["confusion_rate"] and half["bleed_pixels"] == 6
    per_object = mixed_rates(1.0, "per_object")
    assert per_object["object_confusion_rate"] > 4 * per_object["confusion_rate"]  # object errors dominate
    NoisyOracleConfig(**mixed_rates(1.0, "per_view"))  # every mix's full rates are valid settings
    with pytest.raises(ConfigError, match="unknown error mix"):
        mixed_rates(0.5, "per_pixel")
    with pytest.raises(ConfigError, match="severity must lie in"):
        mixed_rates(1.5)


def test_bad_input_is_rejected(text_encoder: PromptedTextEncoder) -> None:
    oracle = NoisyOracle(["wall", "chair"], text_encoder, per_view())
    with pytest.raises(EncoderError, match="class id 5"):
        oracle.extract_labels(np.full((8, 8), 5, dtype=np.int32))
    with pytest.raises(EncoderError, match="integer"):
        oracle.extract_labels(np.zeros((8, 8), dtype=np.float32))
    with pytest.raises(EncoderError, match="at least one"):
        NoisyOracle([], text_encoder)
    intrinsics = CameraIntrinsics(fx=10.0, fy=10.0, cx=4.0, cy=4.0, width=8, height=8)
    frame = RGBDFrame(np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.float32), intrinsics, np.eye(4))
    with pytest.raises(EncoderError, match="no label image"):
        oracle.extract_frame(frame)
    frame.labels = np.ones((8, 8), dtype=np.int32)
    view = oracle.extract_frame(frame, view_index=1)
    assert view.features.shape == (2, 2, 384)
    all_ignored = oracle.extract_labels(np.full((8, 8), IGNORE_INDEX, dtype=np.int32))
    assert not all_ignored.valid.any() and all_ignored.segments == []


def test_on_rendered_scannet_views(text_encoder: PromptedTextEncoder) -> None:
    """Real labels: views of ScanNet scene0000_00 rendered with their ScanNet20 class ids."""
    from ovseg3d_core.data.scenes.rendering import DEFAULT_RENDER_INTRINSICS, generate_trajectory, render_views
    from ovseg3d_core.data.scenes.scannet import load_scannet_scan

    scan = load_scannet_scan()
    poses = generate_trajectory(scan, 3, seed=0)
    small = DEFAULT_RENDER_INTRINSICS.scaled(160, 120)
    frames = render_views(scan, scan.scannet20_ids, poses, intrinsics=small, vertex_instances=scan.instance_ids)
    clean_config = per_view(
        stride=1, confusion_rate=0.0, miss_rate=0.0, bleed_rate=0.0, segment_noise=0.0, pixel_noise=0.0
    )
    clean = NoisyOracle(CLASSES, text_encoder, clean_config)
    independent = NoisyOracle(CLASSES, text_encoder, per_view(stride=1))
    default = NoisyOracle(CLASSES, text_encoder, NoisyOracleConfig(stride=1))  # object errors on top
    correct = labelled = correct_default = 0
    for index, frame in enumerate(frames):
        labelled_pixels = frame.labels != IGNORE_INDEX
        assert labelled_pixels.mean() > 0.3
        view = clean.extract_frame(frame, index)
        np.testing.assert_array_equal(view.class_map, np.where(labelled_pixels, frame.labels, -1))
        expected = clean.class_embeddings[frame.labels[labelled_pixels]]
        np.testing.assert_allclose(view.features[labelled_pixels], expected, atol=1e-6)
        noisy_view = independent.extract_frame(frame, index)
        correct += int((noisy_view.class_map[labelled_pixels] == frame.labels[labelled_pixels]).sum())
        default_view = default.extract_frame(frame, index)
        correct_default += int((default_view.class_map[labelled_pixels] == frame.labels[labelled_pixels]).sum())
        labelled += int(labelled_pixels.sum())
        assert default_view.objects, "rendered views carry instance ids, so object errors apply"
    assert 0.5 < correct / labelled < 0.97  # most pixels right, but per-view noise does corrupt
    assert correct_default < correct  # the calibrated default adds errors that follow objects


# --- per-object errors: drawn once per object, the same in every view --------------------------


def object_view(view_index: int, objects: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """A view of ``objects`` objects (object i has class i % C) laid out in a different order per view."""
    order = np.random.default_rng(view_index).permutation(objects)
    grid = np.full(10 * 10, -1)
    grid[:objects] = order
    instances = np.kron(grid.reshape(10, 10), np.ones((6, 6), dtype=np.int64))
    labels = np.where(instances >= 0, instances % len(CLASSES), IGNORE_INDEX).astype(np.int32)
    return labels, instances


def emitted_per_object(view, instances: np.ndarray) -> dict[int, int]:
    """Each object's emitted class read back from the class map (-1 = missed); one class per object."""
    out = {}
    for instance in np.unique(instances[instances >= 0]):
        values = np.unique(view.class_map[instances == instance])
        assert len(values) == 1, f"object {instance} emitted as {values}"
        out[int(instance)] = int(values[0])
    return out


def test_object_errors_follow_the_object_through_every_view(text_encoder: PromptedTextEncoder) -> None:
    quiet = {"confusion_rate": 0.0, "miss_rate": 0.0, "bleed_rate": 0.0, "segment_noise": 0.0, "pixel_noise": 0.0}
    config = NoisyOracleConfig(stride=1, object_confusion_rate=0.4, object_miss_rate=0.2, seed=5, **quiet)
    oracle = NoisyOracle(CLASSES, text_encoder, config)
    draws = []
    for view_index in range(4):
        labels, instances = object_view(view_index)
        view = oracle.extract_labels(labels, view_index, instances=instances)
        draws.append(emitted_per_object(view, instances))
        assert not view.valid[view.class_map < 0].any()  # a missed object emits no feature
        assert {o.instance: o.emitted_class for o in view.objects} == draws[-1]
    assert all(d == draws[0] for d in draws[1:]), "an object must be emitted the same way in every view"
    truth = {i: i % len(CLASSES) for i in draws[0]}
    missed = sum(e < 0 for e in draws[0].values()) / len(truth)
    confused = sum(e >= 0 and e != truth[i] for i, e in draws[0].items()) / len(truth)
    assert 0.1 <= missed <= 0.32 and 0.2 <= confused <= 0.48  # 80 objects: rates 0.2 and 0.8 x 0.4
    other_seed = NoisyOracle(CLASSES, text_encoder, config.replace(seed=6))
    labels, instances = object_view(0)
    assert emitted_per_object(other_seed.extract_labels(labels, 0, instances=instances), instances) != draws[0]


def test_per_view_errors_come_on_top_of_object_errors(text_encoder: PromptedTextEncoder) -> None:
    config = NoisyOracleConfig(stride=1, object_confusion_rate=1.0, object_miss_rate=0.0, seed=1)
    oracle = NoisyOracle(CLASSES, text_encoder, config.replace(miss_rate=1.0))
    labels, instances = object_view(0)
    view = oracle.extract_labels(labels, 0, instances=instances)
    assert all(o.emitted_class not in (o.true_class, -1) for o in view.objects)  # every object confused ...
    assert not view.valid.any()  # ... and then every segment missed in this view


def test_object_errors_need_instance_ids(text_encoder: PromptedTextEncoder) -> None:
    oracle = NoisyOracle(CLASSES, text_encoder, NoisyOracleConfig())
    labels, instances = object_view(0)
    with pytest.raises(EncoderError, match="instance-id image"):
        oracle.extract_labels(labels, 0)
    with pytest.raises(EncoderError, match="does not match"):
        oracle.extract_labels(labels, 0, instances=instances[:10])
    assert len(oracle.extract_labels(labels, 0, instances=instances).objects) == 80
