"""The spconv student affinity network on CPU: inputs, forward/backward, checkpoints, shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg3d_core.data.scenes.redwood import RedwoodSequence
from ovseg3d_core.geometry import unpack_voxel_keys
from ovseg3d_core.purify.student import (
    SHIPPED_CHECKPOINT,
    StudentCheckpointError,
    StudentConfig,
    StudentInputError,
    build_student,
    embed_voxels,
    load_student,
    save_student,
    student_input_features,
)
from ovseg3d_core.scene import SceneConfig, SceneMap


@pytest.fixture(scope="module")
def voxels() -> dict[str, np.ndarray]:
    """A real Redwood frame fused at 5 cm (~2,000 voxels) as SceneMap-style arrays."""
    scene = SceneMap(SceneConfig(voxel_size=0.05))
    scene.integrate(RedwoodSequence()[0])
    return {"coords": unpack_voxel_keys(scene.keys), "colors": scene.colors(), "normals": scene.normals()}


def _feats(cfg: StudentConfig, v: dict[str, np.ndarray], semantic: np.ndarray | None = None) -> np.ndarray:
    return student_input_features(cfg, v["coords"], v["colors"], v["normals"], semantic)


def test_input_variants_have_the_documented_channels(voxels):
    n = len(voxels["coords"])
    geometry = _feats(StudentConfig(), voxels)
    assert geometry.shape == (n, 6) and geometry.dtype == np.float32
    assert geometry[:, :3].min() >= -1 and geometry[:, :3].max() <= 1
    np.testing.assert_allclose(geometry[:, 3:], voxels["normals"])
    height = _feats(StudentConfig(use_height=True), voxels)
    assert height.shape == (n, 7) and height[:, 6].min() == 0
    assert height[:, 6].max() == pytest.approx(np.ptp(voxels["coords"][:, 2]) * 0.02)
    official = StudentConfig(variant="official", semantic_dim=24)
    semantic = np.random.default_rng(0).normal(size=(n, 24)).astype(np.float32)
    feats = _feats(official, voxels, semantic)
    assert feats.shape == (n, 30) == (n, official.in_channels)
    np.testing.assert_array_equal(feats[:, :24], semantic)


def test_bad_inputs_raise_clear_errors(voxels):
    cfg = StudentConfig()
    with pytest.raises(StudentInputError, match="no voxels"):
        student_input_features(cfg, np.zeros((0, 3), int), np.zeros((0, 3)), np.zeros((0, 3)))
    bad = dict(voxels, normals=voxels["normals"].copy())
    bad["normals"][3] = np.nan
    with pytest.raises(StudentInputError, match="NaN"):
        _feats(cfg, bad)
    with pytest.raises(StudentInputError, match="colors must be"):
        student_input_features(cfg, voxels["coords"], voxels["colors"][:-1], voxels["normals"])
    with pytest.raises(StudentInputError, match="needs per-voxel semantic"):
        _feats(StudentConfig(variant="official"), voxels)
    model = build_student(StudentConfig(hidden=8)).eval()
    with pytest.raises(StudentInputError, match="expects N x 6"):
        model(torch.zeros(4, 3, dtype=torch.int64), torch.zeros(4, 5))
    with pytest.raises(StudentInputError, match="NaN"):
        model(torch.zeros(4, 3, dtype=torch.int64), torch.full((4, 6), float("nan")))
    with pytest.raises(StudentInputError, match="no voxels"):
        model(torch.zeros(0, 3, dtype=torch.int64), torch.zeros(0, 6))


def test_forward_and_backward_on_cpu(voxels):
    torch.manual_seed(0)
    cfg = StudentConfig(hidden=16)
    model = build_student(cfg).train()
    coords = torch.from_numpy(voxels["coords"])
    out = model(coords, torch.from_numpy(_feats(cfg, voxels)))
    assert out.shape == (len(coords), 128)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(len(coords)))
    (out[:, 0] * torch.linspace(-1, 1, len(out))).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    # Embeddings depend on relative positions only: any even voxel shift (which keeps the stride-2
    # grid aligned) leaves them unchanged, so growing the map elsewhere does not alter a voxel.
    model.eval()
    feats = _feats(cfg, voxels)
    a = embed_voxels(model, voxels["coords"], feats)
    b = embed_voxels(model, voxels["coords"] + np.array([1000, -20, 8]), feats)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_single_voxel_and_batched_scenes(voxels):
    cfg = StudentConfig(hidden=8)
    model = build_student(cfg).eval()
    one = embed_voxels(model, np.array([[5, 5, 5]]), np.zeros((1, 6), np.float32))
    assert one.shape == (1, 128) and np.linalg.norm(one) == pytest.approx(1.0, abs=1e-5)
    coords = torch.from_numpy(voxels["coords"])
    feats = torch.from_numpy(_feats(cfg, voxels))
    with torch.inference_mode():
        alone = model(coords, feats)
        # Two copies of the scene in one call (batch index) embed exactly like separate calls.
        both = model(
            torch.cat([coords, coords]),
            torch.cat([feats, feats]),
            torch.repeat_interleave(torch.arange(2), len(coords)),
        )
    torch.testing.assert_close(both[: len(coords)], alone)
    torch.testing.assert_close(both[len(coords) :], alone)


def test_checkpoint_round_trip(tmp_path, voxels):
    cfg = StudentConfig(hidden=8, use_height=True)
    model = build_student(cfg).eval()
    path = save_student(model, tmp_path / "student.pt", meta={"teacher": "fpfh"})
    loaded = load_student(path)
    assert loaded.config == cfg and loaded.meta == {"teacher": "fpfh"}
    feats = _feats(cfg, voxels)
    np.testing.assert_array_equal(
        embed_voxels(loaded, voxels["coords"], feats), embed_voxels(model, voxels["coords"], feats)
    )
    with pytest.raises(StudentCheckpointError, match="not found"):
        load_student(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(StudentCheckpointError, match="not an ovseg3d student"):
        load_student(tmp_path / "other.pt")


def test_shipped_checkpoint_loads_by_default(voxels):
    assert SHIPPED_CHECKPOINT.is_file() and SHIPPED_CHECKPOINT.stat().st_size < 20e6
    model = load_student()
    assert model.config.variant == "geometry" and model.meta["teacher"] == "fpfh_normals"
    emb = embed_voxels(model, voxels["coords"], _feats(model.config, voxels))
    assert emb.shape == (len(voxels["coords"]), 128)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # A trained student is not constant: embeddings spread over directions.
    assert (emb @ emb.T).min() < 0.9
