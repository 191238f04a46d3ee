"""OnlineSegmenter without ROS: geometry before weights, a checkpoint attached later, bad files,
a transactional vocabulary, the purify schedule, snapshots, save/load/reset, and top-k fusion
across vocabulary changes. 7-Scenes frames; OpenCLIP is a 2-layer ViT with RANDOM weights saved to
real files (plumbing only, never a segmentation result)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ovseg3d_core.data.scenes.sevenscenes import SevenScenes
from ovseg3d_core.encoders.base import EncoderError, WeightsNotFoundError
from ovseg3d_core.encoders.openclip import OpenCLIPConfig, load_openclip_model
from ovseg3d_core.labeling import LabelingError
from ovseg3d_core.lifting import CLASS_VOTES
from ovseg3d_core.online import BACKGROUND_NAME, OnlineSegmenter, OnlineSegmenterConfig
from ovseg3d_core.segmenter import SceneSegmenter, SegmenterError

VIT = {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16}
TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}


def write_architecture(folder, name: str, embed_dim: int) -> str:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"embed_dim": embed_dim, "vision_cfg": VIT, "text_cfg": TEXT}))
    return str(path)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """A tiny ViT's architecture file, a random-weight checkpoint of it, and one of another architecture."""
    folder = tmp_path_factory.mktemp("openclip")
    architecture = write_architecture(folder, "online-tiny-vit", 32)
    other = write_architecture(folder, "online-other-vit", 48)
    files = {"architecture": architecture}
    for name, arch, seed in (("checkpoint", architecture, 7), ("other", other, 8)):
        model = load_openclip_model(OpenCLIPConfig(architecture=arch, allow_random_weights=True, random_seed=seed))
        files[name] = str(folder / f"{name}.pt")
        torch.save(model.state_dict(), files[name])
    return files


@pytest.fixture(scope="module")
def frames():
    sequence = SevenScenes()
    return [sequence[i] for i in range(0, 120, 15)]


def config(architecture: str, checkpoint: str = "", **segmenter) -> OnlineSegmenterConfig:
    values = {
        "scene": {"voxel_size": 0.06},
        "purification": "geometric",
        "pooling": {"k": 8, "iterations": 3},
        "encoders": {
            "checkpoint": checkpoint,
            "openclip": {"architecture": architecture, "short_side": 64, "window_stride": 64},
        },
        **segmenter,
    }
    every_frame = {"translation_m": 0.0, "rotation_deg": 0.0, "interval_s": 0.0}
    return OnlineSegmenterConfig.from_dict({"keyframes": every_frame, "purify_period_s": 1.0, "segmenter": values})


def test_without_weights_it_maps_geometry_in_camera_colours(model_files, frames):
    online = OnlineSegmenter(config(model_files["architecture"]))
    assert not online.segmenter.has_model
    reason = online.labels_unavailable()
    assert "segmenter.encoders.checkpoint" in reason and "Model weights" in reason
    observations = [online.observe(frame) for frame in frames[:3]]
    assert all(o.touched > 0 and not o.keyframe for o in observations)
    snapshot = online.snapshot()
    background = len(online.segmenter.vocabulary)
    assert not snapshot.labeled and snapshot.source == reason and len(snapshot.positions) == online.voxels > 0
    assert (snapshot.labels == background).all() and (snapshot.scores == 0).all()
    np.testing.assert_array_equal(snapshot.colors, online.segmenter.scene.colors())
    assert snapshot.legend.labels[-1] == BACKGROUND_NAME and snapshot.legend.counts[-1] == online.voxels
    assert snapshot.legend.counts[:-1].sum() == 0
    with pytest.raises(SegmenterError, match=r"segmenter\.encoders\.checkpoint"):
        online.query("a chair", 0.0)
    assert online.set_vocabulary(["chair", "table"]) is None  # names kept for when a model arrives
    assert online.legend().labels == ("chair", "table", BACKGROUND_NAME)


def test_a_checkpoint_set_later_labels_the_keyframes_from_then_on(model_files, frames):
    online = OnlineSegmenter(config(model_files["architecture"]))
    for frame in frames[:3]:
        online.observe(frame)
    source = online.set_checkpoint(model_files["checkpoint"])
    assert "checkpoint.pt" in source and online.segmenter.has_model
    keyframes = [online.observe(frame).keyframe for frame in frames[3:6]]
    assert keyframes == [True, True, True]
    snapshot = online.snapshot()
    assert snapshot.labeled and snapshot.report.mode == "geometric" and snapshot.source == source
    assert len(np.unique(snapshot.labels)) > 1

    # The same frames through a segmenter configured with the file from the start, lifting only the
    # frames that came after the checkpoint: the labels come from that model, voxel for voxel.
    reference = SceneSegmenter(config(model_files["architecture"], model_files["checkpoint"]).segmenter)
    for index, frame in enumerate(frames[:6]):
        reference.add_frame(frame, keyframe=index >= 3)
    np.testing.assert_array_equal(snapshot.labels, reference.label().labels)
    palette_rows = {tuple(c) for c in (snapshot.legend.colors * 255).astype(np.uint8)}
    assert {tuple(c) for c in snapshot.colors} <= palette_rows  # label colours now, not the camera's


def test_a_missing_corrupt_or_mismatched_checkpoint_keeps_the_current_model(model_files, frames, tmp_path):
    online = OnlineSegmenter(config(model_files["architecture"], model_files["checkpoint"]))
    for frame in frames[:3]:
        online.observe(frame)
    before = online.snapshot()
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    for path, error in (
        (tmp_path / "missing.pt", "does not exist"),
        (corrupt, "not usable"),
        (model_files["other"], "not usable"),
    ):
        with pytest.raises(WeightsNotFoundError, match=error) as raised:
            online.set_checkpoint(str(path))
        assert str(path) in str(raised.value)
        assert online.segmenter.source_name == before.source
    online.observe(frames[3])
    after = online.snapshot()
    assert after.labeled and len(after.positions) >= len(before.positions)
    with pytest.raises(EncoderError, match="architecture config"):
        OnlineSegmenter(config(str(tmp_path / "no-such-architecture.json"), model_files["checkpoint"]))


def test_the_vocabulary_change_is_transactional(model_files, frames, monkeypatch):
    online = OnlineSegmenter(config(model_files["architecture"], model_files["checkpoint"]))
    for frame in frames[:3]:
        online.observe(frame)
    snapshot = online.set_vocabulary(["chair", "table", "floor"])
    assert snapshot.legend.labels == ("chair", "table", "floor", BACKGROUND_NAME)
    assert snapshot.labels.max() <= 3
    with pytest.raises(LabelingError, match="repeats"):
        online.set_vocabulary(["chair", "chair"])
    assert online.segmenter.vocabulary == ("chair", "table", "floor")

    def failing_label(vocabulary=None):
        raise RuntimeError("labeling broke")

    monkeypatch.setattr(online.segmenter, "label", failing_label)
    with pytest.raises(RuntimeError, match="labeling broke"):
        online.set_vocabulary(["wall", "door"])
    monkeypatch.undo()
    assert online.segmenter.vocabulary == ("chair", "table", "floor")
    np.testing.assert_array_equal(online.snapshot().labels, snapshot.labels)


def test_purification_follows_its_period_and_yields_to_waiting_frames(model_files, frames, monkeypatch):
    now = [100.0]
    online = OnlineSegmenter(config(model_files["architecture"]), clock=lambda: now[0])
    assert not online.purify_due()  # nothing observed
    online.observe(frames[0])
    assert online.changed and not online.purify_due()
    now[0] += 1.0
    assert online.purify_due() and not online.purify_due(waiting=2)
    now[0] += 3.0
    assert online.purify_due(waiting=2)  # at the latest after four periods
    online.snapshot()
    assert not online.changed and not online.purify_due()

    # The period counts from the end of a snapshot: a slow purification leaves the next one a full period away.
    positions = online.segmenter.scene.positions

    def slow_positions():
        now[0] += 2.0
        return positions()

    monkeypatch.setattr(online.segmenter.scene, "positions", slow_positions)
    online.observe(frames[1])
    now[0] += 1.0
    online.snapshot()
    online.observe(frames[2])
    now[0] += 0.9
    assert not online.purify_due()
    now[0] += 0.1
    assert online.purify_due()
    on_demand = OnlineSegmenter(config(model_files["architecture"]).replace(purify_period_s=0.0))
    on_demand.observe(frames[0])
    assert not on_demand.purify_due() and on_demand.snapshot().positions.shape[0] > 0


def test_snapshot_stamp_save_load_and_reset(model_files, frames, tmp_path):
    online = OnlineSegmenter(config(model_files["architecture"], model_files["checkpoint"]))
    online.observe(frames[1], stamp_ns=2_000_000_000_123)
    online.observe(frames[0], stamp_ns=1_000_000_000_000)  # late: the stamp stays the newest
    assert online.snapshot().stamp_ns == 2_000_000_000_123
    path = online.save(tmp_path / "map.npz")
    voxels = online.voxels
    online.reset()
    assert online.voxels == 0 and online.snapshot().stamp_ns is None
    assert online.load(path) == voxels
    assert online.snapshot().labeled


def test_topk_agreement_votes_over_its_own_classes_across_vocabulary_changes(model_files, frames):
    """A vocabulary of another size mid-sequence neither breaks lifting nor changes what was lifted."""
    topk = {"lifting": {"fusion": "topk_agreement"}}
    online = OnlineSegmenter(config(model_files["architecture"], model_files["checkpoint"], **topk))
    classes = len(online.config.segmenter.lifting.agreement_classes)
    for frame in frames[:3]:
        online.observe(frame)
    online.set_vocabulary(["chair", "table", "floor"])
    for frame in frames[3:5]:
        assert online.observe(frame).keyframe
    online.set_vocabulary(["chair", "table", "floor", "wall", "door"])
    assert online.observe(frames[5]).keyframe
    scene = online.segmenter.scene
    assert scene.channel(CLASS_VOTES, (classes,), np.float32).shape[1] == classes

    reference = OnlineSegmenter(
        config(
            model_files["architecture"],
            model_files["checkpoint"],
            vocabulary=["chair", "table", "floor", "wall", "door"],
            **topk,
        )
    )
    for frame in frames[:6]:
        reference.observe(frame)
    np.testing.assert_array_equal(scene.features(), reference.segmenter.scene.features())
    np.testing.assert_array_equal(online.snapshot().labels, reference.snapshot().labels)
