"""Distillation sampler rules, InfoNCE, and the teachers, on a real fused Redwood frame."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from ovseg3d_core.data.scenes.redwood import RedwoodSequence
from ovseg3d_core.scene import SceneConfig, SceneMap
from ovseg3d_core.training.distillation import (
    ContrastiveSample,
    DistillationConfig,
    DistillationError,
    info_nce_loss,
    sample_contrastive,
    teacher_agreement,
)
from ovseg3d_core.training.teachers import (
    FPFHConfig,
    FPFHTeacher,
    PointNetPatchConfig,
    PointNetPatchTeacher,
    SonataAdapter,
    TeacherError,
    TeacherWeightsError,
    build_teacher,
    run_teacher,
)


@pytest.fixture(scope="module")
def scene() -> SceneMap:
    """One real Redwood RGB-D frame fused at 5 cm: ~2,000 voxels, quick for every test."""
    scene = SceneMap(SceneConfig(voxel_size=0.05))
    scene.integrate(RedwoodSequence()[0])
    assert 1000 < len(scene) < 5000
    return scene


@pytest.fixture(scope="module")
def fpfh(scene) -> np.ndarray:
    return run_teacher(FPFHTeacher(), scene.positions(), colors=scene.colors(), normals=scene.normals())


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def test_sampler_obeys_the_design_rules(scene, fpfh):
    cfg = DistillationConfig(anchors=300)
    points = scene.positions()
    sample = sample_contrastive(fpfh, points, cfg, np.random.default_rng(1))
    n = len(points)
    assert sample.anchors.shape == (300,) and len(np.unique(sample.anchors)) == 300
    assert sample.positives.shape == (300,) and sample.negatives.shape == (300, 63)
    assert not np.any(sample.positives == sample.anchors)
    assert not np.any(sample.negatives == sample.anchors[:, None])
    assert sample.negatives.min() >= 0 and sample.negatives.max() < n

    sim = _unit(fpfh) @ _unit(fpfh).T
    _, near = cKDTree(points).query(points, k=cfg.local_neighbours + 1)
    for row, a in enumerate(sample.anchors):
        others = np.delete(sim[a], a)
        # Positive: the most teacher-similar point other than the anchor itself.
        assert sim[a, sample.positives[row]] == pytest.approx(others.max(), abs=1e-5)
        # Global negatives: the 48 least similar points of the scene.
        cutoff = np.sort(others)[cfg.global_negatives - 1]
        assert np.all(sim[a, sample.negatives[row, :48]] <= cutoff + 1e-5)
        # Local negatives: from the 96 spatial neighbours, and the 15 least similar among them.
        neighbours = [j for j in near[a] if j != a][: cfg.local_neighbours]
        local = sample.negatives[row, 48:]
        assert set(local) <= set(neighbours)
        local_cutoff = np.sort(sim[a, neighbours])[cfg.local_negatives - 1]
        assert np.all(sim[a, local] <= local_cutoff + 1e-5)


def test_sampler_bad_input(scene, fpfh):
    cfg = DistillationConfig(anchors=64)
    points = scene.positions()
    with pytest.raises(DistillationError, match="at least 97"):
        sample_contrastive(fpfh[:96], points[:96], cfg)
    exact = sample_contrastive(fpfh[:97], points[:97], cfg, np.random.default_rng(0))
    assert exact.negatives.shape == (64, 63)
    with pytest.raises(DistillationError, match=r"has 0 points"):
        sample_contrastive(np.zeros((0, 33)), np.zeros((0, 3)), cfg)
    nan = fpfh.copy()
    nan[5, 0] = np.nan
    with pytest.raises(DistillationError, match="NaN"):
        sample_contrastive(nan, points, cfg)
    with pytest.raises(DistillationError, match="teacher embeddings must be"):
        sample_contrastive(fpfh[:-1], points, cfg)
    with pytest.raises(DistillationError, match="exceeds"):
        DistillationConfig(local_negatives=20, local_neighbours=10)
    # More anchors than points: every point is an anchor once.
    small = sample_contrastive(fpfh[:200], points[:200], DistillationConfig(anchors=4096), np.random.default_rng(0))
    assert sorted(small.anchors.tolist()) == list(range(200))


def test_info_nce_matches_hand_computation():
    emb = torch.zeros(65, 65)
    emb[0, 0] = emb[1, 0] = 1.0  # anchor 0 and its positive 1 coincide (cosine 1)
    emb[2:, 0] = 0.8  # 63 negatives at cosine 0.8 to the anchor, unit length
    emb[2:, 1:64] = 0.6 * torch.eye(63)
    sample = ContrastiveSample(np.array([0]), np.array([1]), np.arange(2, 65)[None])
    loss = info_nce_loss(emb, sample, temperature=0.07).item()
    expected = -math.log(math.exp(1 / 0.07) / (math.exp(1 / 0.07) + 63 * math.exp(0.8 / 0.07)))
    assert loss == pytest.approx(expected, rel=1e-5)
    assert teacher_agreement(emb.numpy(), sample) == 1.0
    swapped = ContrastiveSample(np.array([0]), np.array([2]), np.array([[1, *range(3, 65)]]))
    assert teacher_agreement(emb.numpy(), swapped) == 0.0


def test_loss_decreases_on_a_real_scene(scene, fpfh):
    from ovseg3d_core.geometry import unpack_voxel_keys
    from ovseg3d_core.purify.student import StudentConfig, build_student, student_input_features

    torch.manual_seed(0)
    cfg = StudentConfig(hidden=16)
    model = build_student(cfg)
    coords = torch.from_numpy(unpack_voxel_keys(scene.keys))
    feats = torch.from_numpy(student_input_features(cfg, coords.numpy(), scene.colors(), scene.normals()))
    sample = sample_contrastive(fpfh, scene.positions(), DistillationConfig(anchors=512), np.random.default_rng(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = info_nce_loss(model(coords, feats), sample)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0] - 0.2, losses


def test_fpfh_teacher_is_finite_and_shaped(scene, fpfh):
    assert fpfh.shape == (len(scene), 33) and fpfh.dtype == np.float32
    assert np.isfinite(fpfh).all() and fpfh.sum(axis=1).max() > 0
    own_normals = run_teacher(build_teacher("fpfh"), scene.positions())
    assert own_normals.shape == fpfh.shape


def test_pointnet_patch_teacher_uses_the_real_weights(scene):
    points = scene.positions()[:1500]
    teacher = PointNetPatchTeacher(PointNetPatchConfig(patch_points=16, out_dim=32, max_centres=400))
    emb = run_teacher(teacher, points)
    assert emb.shape == (1500, 32) and np.isfinite(emb).all()
    assert emb.std(axis=0).min() > 0  # the PCA keeps varying directions
    full = run_teacher(
        PointNetPatchTeacher(PointNetPatchConfig(patch_points=16, out_dim=0, max_centres=0)), points[:200]
    )
    assert full.shape == (200, 1024)
    # Translating the scene does not change patch descriptors (patches are centred on their point).
    moved = run_teacher(
        PointNetPatchTeacher(PointNetPatchConfig(patch_points=16, out_dim=0, max_centres=0)), points[:200] + 5.0
    )
    np.testing.assert_allclose(moved, full, rtol=1e-3, atol=1e-3)
    with pytest.raises(TeacherWeightsError):
        PointNetPatchTeacher(PointNetPatchConfig(weights="/nonexistent/pointnet.t7"))


def test_sonata_adapter_needs_user_weights_and_accepts_callables(tmp_path, scene):
    with pytest.raises(TeacherWeightsError, match="not bundled"):
        SonataAdapter()
    with pytest.raises(TeacherWeightsError, match="not found"):
        SonataAdapter(checkpoint=tmp_path / "missing.pt")

    class Stand(torch.nn.Module):
        def forward(self, coord: torch.Tensor, color: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
            return torch.cat([coord, color, normal], dim=1)

    path = tmp_path / "sonata_export.pt2"
    n, example = torch.export.Dim("n"), tuple(torch.rand(4, 3) for _ in range(3))
    torch.export.save(torch.export.export(Stand(), example, dynamic_shapes=({0: n}, {0: n}, {0: n})), path)
    (tmp_path / "garbage.pt2").write_bytes(b"not a program")
    with pytest.raises(TeacherWeightsError, match=r"not a torch\.export program"):
        SonataAdapter(checkpoint=tmp_path / "garbage.pt2")
    points, colors = scene.positions()[:100], scene.colors()[:100]
    out = run_teacher(SonataAdapter(checkpoint=path), points, colors=colors, normals=scene.normals()[:100])
    assert out.shape == (100, 9)
    np.testing.assert_allclose(out[:, 3:6], colors / 255.0, atol=1e-6)
    assert run_teacher(SonataAdapter(model=Stand()), points).shape == (100, 9)


def test_sonata_adapter_estimates_missing_normals_as_its_fpfh_config_says(scene):
    class Stand(torch.nn.Module):
        def forward(self, coord: torch.Tensor, color: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
            return normal

    points = scene.positions()[:500]
    wide = FPFHConfig(normal_radius=0.2, max_nn=30, append_normals=True)
    normals = run_teacher(SonataAdapter(model=Stand(), normal_estimation=wide), points)
    np.testing.assert_allclose(normals, run_teacher(FPFHTeacher(wide), points)[:, -3:], atol=1e-5)
    default = run_teacher(SonataAdapter(model=Stand()), points)
    assert not np.allclose(np.abs(normals), np.abs(default), atol=1e-3)  # the setting is used, not a constant


def test_fpfh_normals_teacher_tells_floor_from_wall():
    """FPFH is rotation invariant, so a floor and a wall look alike; the appended normal separates them."""
    grid = np.arange(0.0, 1.0, 0.02)
    u, v = (a.ravel() for a in np.meshgrid(grid, grid))
    floor = np.column_stack([u, v, np.zeros_like(u)])
    wall = np.column_stack([u, np.full_like(u, 1.5), v + 0.2])  # apart, so no neighbourhood spans both
    points = np.vstack([floor, wall])
    normals = np.vstack([np.tile([0.0, 0.0, 1.0], (len(floor), 1)), np.tile([0.0, -1.0, 0.0], (len(wall), 1))])
    interior = np.all((points[:, :2] > 0.2) & (points[:, :2] < 0.8), axis=1) | (
        (np.abs(points[:, 1] - 1.5) < 1e-9) & (points[:, 0] > 0.2) & (points[:, 0] < 0.8)
    )
    on_floor = np.arange(len(points)) < len(floor)

    def floor_wall_cosine(teacher_name: str) -> float:
        embedding = _unit(run_teacher(build_teacher(teacher_name), points, normals=normals))
        return float(embedding[interior & on_floor].mean(0) @ embedding[interior & ~on_floor].mean(0))

    plain = run_teacher(build_teacher("fpfh"), points, normals=normals)
    with_normals = run_teacher(build_teacher("fpfh_normals"), points, normals=normals)
    assert with_normals.shape == (len(points), 36)
    np.testing.assert_allclose(with_normals[:, :33], _unit(plain), atol=1e-6)
    np.testing.assert_allclose(with_normals[:, 33:], normals, atol=1e-6)
    assert floor_wall_cosine("fpfh") > 0.95
    assert floor_wall_cosine("fpfh_normals") < 0.6


def test_teachers_reject_bad_input():
    teacher = FPFHTeacher()
    with pytest.raises(TeacherError, match="no points"):
        teacher(np.zeros((0, 3)))
    with pytest.raises(TeacherError, match="NaN"):
        teacher(np.array([[0.0, 0.0, np.nan]] * 10))
    with pytest.raises(TeacherError, match="N x 3"):
        teacher(np.zeros((10, 2)))
    single = run_teacher(teacher, np.zeros((1, 3)))
    assert single.shape == (1, 33)
    with pytest.raises(TeacherError, match="NaN/inf embeddings"):
        run_teacher(lambda p, colors=None, normals=None: np.full((len(p), 4), np.nan), np.zeros((5, 3)))
    with pytest.raises(TeacherError, match="expected N x E"):
        run_teacher(lambda p, colors=None, normals=None: np.zeros(3), np.zeros((5, 3)))
    with pytest.raises(TeacherError, match="unknown teacher"):
        build_teacher("sonata")
