"""Tri-modal retrieval: losses, fusion, metrics, frozen encoders, feature cache and ShapeIndex."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch
import yaml

from ovseg3d_core.data.root import data_path
from ovseg3d_core.data.shapes.procedural_dataset import ProceduralDatasetConfig, procedural_splits
from ovseg3d_core.data.shapes.sample import ShapeSampleConfig
from ovseg3d_core.data.shapes.text2shape import MissingShapeWarning, load_text2shape
from ovseg3d_core.encoders.base import WeightsNotFoundError
from ovseg3d_core.encoders.pointnet import (
    MODELNET40_CLASSES,
    PointNetFeatures,
    load_pointnet_classifier,
    load_pointnet_features,
)
from ovseg3d_core.metrics.retrieval import RetrievalMetricError, ranking_metrics, retrieval_scores
from ovseg3d_core.paths import shipped_checkpoints
from ovseg3d_core.retrieval.database import ShapeDatabase, ShapeDatabaseConfig
from ovseg3d_core.retrieval.feature_cache import FeatureCacheError, ShapeFeatures, compute_features
from ovseg3d_core.retrieval.frozen_encoders import FrozenEncoderConfig, ViewEncoder, normalize_unit_sphere
from ovseg3d_core.retrieval.index import RetrievalQueryError, ShapeIndex, ShapeIndexError
from ovseg3d_core.retrieval.losses import hn_nce_loss, info_nce_loss
from ovseg3d_core.retrieval.model import (
    CHECKPOINT_VERSION,
    CheckpointInfo,
    ContextQueryFusion,
    RetrievalConfig,
    RetrievalModelError,
    TriModalRetrievalModel,
    load_checkpoint_info,
    load_model,
    read_checkpoint,
    save_model,
    view_subset,
)
from ovseg3d_core.training.retrieval import (
    RetrievalExperimentConfig,
    RetrievalTrainConfig,
    checkpoint_info,
    fit,
    upgrade_checkpoint,
)
from ovseg3d_core.training.run import OptimConfig

# ---------------------------------------------------------------- losses


def test_hn_nce_equals_info_nce_at_beta_zero():
    torch.manual_seed(0)
    shapes, texts = torch.randn(16, 32), torch.randn(16, 32)
    tau = torch.tensor(0.07)
    assert torch.allclose(hn_nce_loss(shapes, texts, tau, beta=0.0), info_nce_loss(shapes, texts, tau), atol=1e-5)


def test_hn_nce_matches_hand_computation_and_upweights_hard_negatives():
    torch.manual_seed(1)
    shapes, texts = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    tau, beta = 0.5, 0.5
    s = (shapes / shapes.norm(dim=1, keepdim=True)) @ (texts / texts.norm(dim=1, keepdim=True)).T
    s = s.numpy()

    def direction(sim):
        total = 0.0
        for i in range(3):
            others = [j for j in range(3) if j != i]
            z = sum(np.exp(beta * sim[i, k] / tau) for k in others)
            neg = sum(np.exp(sim[i, j] / tau) * 2 * np.exp(beta * sim[i, j] / tau) / z for j in others)
            pos = np.exp(sim[i, i] / tau)
            total += -np.log(pos / (pos + neg))
        return total / 3

    expected = direction(s) + direction(s.T)
    got = hn_nce_loss(shapes, texts, torch.tensor(tau, dtype=torch.float64), beta)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    # Re-weighting towards harder (more similar) negatives can only raise the loss.
    assert float(got) > float(info_nce_loss(shapes, texts, torch.tensor(tau, dtype=torch.float64)))


# ---------------------------------------------------------------- model


def test_cqa_fusion_shapes_and_trilinear_similarity():
    torch.manual_seed(0)
    fusion = ContextQueryFusion(dim=8, hidden=16)
    points, views = torch.randn(2, 5, 8), torch.randn(2, 3, 8)
    sim = fusion.similarity(points, views)
    assert sim.shape == (2, 5, 3)
    p, i = points[1, 4], views[1, 2]
    manual = fusion.w_point @ p + fusion.w_view @ i + fusion.w_joint @ (p * i)
    assert torch.allclose(sim[1, 4, 2], manual, atol=1e-5)
    assert fusion(points, views).shape == (2, 8)


@pytest.mark.parametrize("fusion", ["cqa", "mlp"])
@pytest.mark.parametrize("reconstruction", ["tri", "bi", "none"])
def test_model_variants_produce_unit_embeddings_and_losses(fusion, reconstruction):
    cfg = RetrievalConfig(dim=16, hidden=32, colour_dim=4, n_views=4, fusion=fusion, reconstruction=reconstruction)
    model = TriModalRetrievalModel(cfg)
    p, g, v, t = torch.randn(3, 6, 1024), torch.rand(3, 6, 9), torch.randn(3, 6, 1280), torch.randn(3, 384)
    emb = model.encode_shape(p, g, v)
    assert emb.shape == (3, 16)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    losses = model.losses(p, g, v, t)
    assert ("rec_p2i" in losses) == (reconstruction != "none")
    assert torch.isfinite(losses["total"])


@pytest.mark.parametrize("stop_gradient", [False, True])
def test_reconstruction_stop_gradient_keeps_targets_out_of_the_graph(stop_gradient):
    torch.manual_seed(0)
    cfg = RetrievalConfig(dim=16, hidden=32, colour_dim=4, dropout=0.0, reconstruction_stop_gradient=stop_gradient)
    model = TriModalRetrievalModel(cfg)
    p, g, v, t = torch.randn(3, 6, 1024), torch.rand(3, 6, 9), torch.randn(3, 6, 1280), torch.randn(3, 384)
    model.losses(p, g, v, t)["rec_p2i"].backward()  # target: pooled views; inputs: pooled points + text
    view_grad = model.view_adapter[0].weight.grad
    assert (view_grad is None or not view_grad.any()) == stop_gradient
    assert model.point_adapter[0].weight.grad.any() and model.text_adapter[0].weight.grad.any()


def test_view_subset_and_too_many_views():
    assert view_subset(12, 6).tolist() == [0, 2, 4, 6, 8, 10]
    assert view_subset(6, 1).tolist() == [0]
    model = TriModalRetrievalModel(RetrievalConfig(dim=8, hidden=16, n_views=12))
    with pytest.raises(RetrievalModelError, match="12 views"):
        model.encode_shape(torch.randn(1, 4, 1024), torch.rand(1, 4, 9), torch.randn(1, 6, 1280))


def test_loss_decreases_on_a_tiny_set():
    torch.manual_seed(0)
    n = 24
    p, g, v = torch.randn(n, 4, 1024), torch.rand(n, 4, 9), torch.randn(n, 6, 1280)
    t = v.mean(1)[:, :384] + 0.1 * torch.randn(n, 384)  # captions that depend on the shape
    model = TriModalRetrievalModel(RetrievalConfig(dim=32, hidden=64, dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(15):
        loss = model.losses(p, g, v, t)["total"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(model.losses(p, g, v, t)["total"].detach()) < 0.5 * first


def test_model_checkpoint_round_trip(tmp_path):
    model = TriModalRetrievalModel(RetrievalConfig(dim=16, hidden=32, fusion="mlp")).eval()
    info = CheckpointInfo(encoders=FrozenEncoderConfig(point_tokens=8), held_out=[5, 2])
    path = save_model(model, tmp_path / "m.pt", info=info)
    loaded = load_model(path)
    assert loaded.config == model.config
    assert load_checkpoint_info(path) == info
    x = (torch.randn(2, 4, 1024), torch.rand(2, 4, 9), torch.randn(2, 6, 1280))
    assert torch.allclose(model.encode_shape(*x), loaded.encode_shape(*x))
    torch.save({"format": "something else"}, tmp_path / "bad.pt")
    with pytest.raises(RetrievalModelError, match="not an ovseg3d retrieval checkpoint"):
        load_model(tmp_path / "bad.pt")


def test_version_1_checkpoints_load_their_weights_and_upgrade_with_their_run_config(tmp_path):
    model = TriModalRetrievalModel(RetrievalConfig(dim=16, hidden=32)).eval()
    path = save_model(model, tmp_path / "m.pt", info=CheckpointInfo())
    state = read_checkpoint(path)
    del state["info"]
    torch.save({**state, "version": 1, "extra": {"val": {"t2s_rr1": 0.5}}}, path)
    assert torch.equal(load_model(path).text_adapter[0].weight, model.text_adapter[0].weight)
    with pytest.raises(RetrievalModelError, match=r"version-1 .*upgrade_checkpoint"):
        load_checkpoint_info(path)

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"n_shapes": 50, "seed": 3}, "encoders": {"point_tokens": 8}}))
    upgrade_checkpoint(path, config)
    upgraded = read_checkpoint(path)
    assert upgraded["version"] == CHECKPOINT_VERSION and upgraded["extra"] == {"val": {"t2s_rr1": 0.5}}
    assert all(torch.equal(upgraded["model"][k], v) for k, v in state["model"].items())
    info = load_checkpoint_info(path)
    assert info.corpus.n_shapes == 50 and info.corpus.seed == 3 and info.encoders.point_tokens == 8
    splits = procedural_splits(info.corpus)
    assert len(info.held_out) == 5 and all(splits[i] == "test" for i in info.held_out)

    torch.save({**state, "version": 99}, path)
    with pytest.raises(RetrievalModelError, match="version 99, expected 1 to"):
        load_model(path)


def test_the_shipped_checkpoint_carries_the_settings_of_its_training_run():
    shipped = shipped_checkpoints() / "retrieval"
    info = load_checkpoint_info(shipped / "model.pt")
    assert info == checkpoint_info(RetrievalExperimentConfig.from_yaml(shipped / "config.yaml"))
    assert len(info.held_out) == 300 and info.encoders.view_size == info.corpus.sample.views.size == 128


def test_shape_database_builds_from_the_checkpoint_alone(tmp_path):
    corpus = ProceduralDatasetConfig(
        n_shapes=40, sample=ShapeSampleConfig.from_dict({"n_points": 2048, "views": {"size": 64}})
    )
    info = CheckpointInfo(
        encoders=FrozenEncoderConfig(view_size=64, point_tokens=8), corpus=corpus, held_out=[7, 3, 19]
    )
    torch.manual_seed(0)
    model = TriModalRetrievalModel(RetrievalConfig(dim=16, hidden=32)).eval()
    checkpoint = save_model(model, tmp_path / "m.pt", info=info)
    config = ShapeDatabaseConfig(
        checkpoint=str(checkpoint), procedural_shapes=2, text2shape=False, cloud_points=64, cache_dir=str(tmp_path)
    )
    database = ShapeDatabase.load_or_build(config, progress=False)
    assert database.index.shape_ids == ["proc-0-000007", "proc-0-000003"]  # the first held-out shapes, in order
    assert database.index.metadata["encoders"] == info.encoders.to_dict()
    assert database.cloud("proc-0-000003").shape == (64, 6) and database.thumbnails["proc-0-000007"].shape[0] == 64
    ids, scores = database.retrieve("a red chair", 2)
    assert sorted(ids) == sorted(database.index.shape_ids) and scores[0] >= scores[1]
    # Built once per checkpoint and settings: the same spec reuses the cache, a new checkpoint or setting does not.
    assert ShapeDatabase.load_or_build(config, progress=False).index.shape_ids == database.index.shape_ids
    save_model(model, checkpoint, info=info.replace(held_out=[19]))
    assert ShapeDatabase.load_or_build(config, progress=False).index.shape_ids == ["proc-0-000019"]
    assert len(ShapeDatabase.load_or_build(config.replace(procedural_shapes=1), progress=False)) == 1
    assert len(list(tmp_path.glob("*/index.npz"))) == 3


# ---------------------------------------------------------------- metrics


def test_ranking_metrics_hand_computed():
    # 3 text queries x 4 shapes; the relevant shape ranks 1st, 3rd and 6th-or-later (absent from top 5 not possible
    # with 4 items, so the third is ranked 4th).
    scores = np.array([[0.9, 0.1, 0.2, 0.3], [0.5, 0.1, 0.9, 0.7], [0.9, 0.8, 0.7, 0.1]])
    relevant = np.zeros((3, 4), bool)
    relevant[0, 0] = relevant[1, 0] = relevant[2, 3] = True
    m = ranking_metrics(scores, relevant)
    assert m["rr1"] == pytest.approx(1 / 3)
    assert m["rr5"] == pytest.approx(1.0)
    assert m["ndcg5"] == pytest.approx((1 + 1 / np.log2(4) + 1 / np.log2(5)) / 3)


def test_ndcg_with_several_relevant_items_uses_ideal_over_min_relevant_five():
    # One shape query, 7 captions, 2 relevant at ranks 2 and 4 (0-based 1 and 3).
    scores = np.array([[7, 6, 5, 4, 3, 2, 1]], dtype=float)
    relevant = np.zeros((1, 7), bool)
    relevant[0, [1, 3]] = True
    m = ranking_metrics(scores, relevant)
    dcg = 1 / np.log2(3) + 1 / np.log2(5)
    ideal = 1 + 1 / np.log2(3)
    assert m["ndcg5"] == pytest.approx(dcg / ideal)
    assert m["rr1"] == 0.0 and m["rr5"] == 1.0


def test_ties_rank_relevant_items_after_irrelevant_ones_whatever_the_input_order():
    # Query 0: the relevant shape ties with two irrelevant ones at the top; query 1: the same set
    # with the columns reversed. Pessimistic ranks: the relevant item is 3rd (0-based 2) in both.
    scores = np.array([[0.9, 0.9, 0.9, 0.2], [0.2, 0.9, 0.9, 0.9]])
    relevant = np.array([[True, False, False, False], [False, False, False, True]])
    m = ranking_metrics(scores, relevant)
    assert m["rr1"] == 0.0 and m["rr5"] == 1.0
    assert m["ndcg5"] == pytest.approx(1 / np.log2(4))
    # Two relevant captions tied with one irrelevant caption rank 2nd and 3rd in either order.
    scores = np.array([[0.5, 0.5, 0.5, 0.9], [0.9, 0.5, 0.5, 0.5]])
    relevant = np.array([[True, True, False, False], [False, False, True, True]])
    m = ranking_metrics(scores, relevant)
    assert m["rr1"] == 0.0
    assert m["ndcg5"] == pytest.approx((1 / np.log2(4) + 1 / np.log2(5)) / (1 + 1 / np.log2(3)))
    # A model that scores everything equally finds nothing in the top 1 of a 4-item gallery.
    assert ranking_metrics(np.zeros((4, 4)), np.eye(4, dtype=bool))["rr1"] == 0.0


def test_retrieval_scores_both_directions_and_duplicate_gallery_rows():
    e = np.eye(3)
    text = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1.0]])  # caption 1 (of shape b) is closer to shape a
    owners = ["a", "b", "c"]
    plain = retrieval_scores(text, owners, e, ["a", "b", "c"])
    # The same gallery given once per caption pair (a repeated) must give identical results.
    dup = retrieval_scores(text, owners, np.vstack([e[0], e[0], e[1], e[2]]), ["a", "a", "b", "c"])
    assert plain == dup
    assert plain.t2s_rr1 == pytest.approx(2 / 3)
    assert plain.t2s_ndcg5 == pytest.approx((1 + 1 / np.log2(3) + 1) / 3)
    # Shape b's only caption still ranks first among the captions (0.6 vs 0 vs 0).
    assert plain.s2t_rr1 == pytest.approx(1.0)
    with pytest.raises(RetrievalMetricError, match="not in the gallery"):
        retrieval_scores(text, ["a", "b", "z"], e, ["a", "b", "c"])


# ---------------------------------------------------------------- frozen encoders (real weights, real data)


def _bathtub_points(seed: int = 0) -> np.ndarray:
    import open3d as o3d

    mesh = o3d.io.read_triangle_mesh(str(data_path("modelnet", "bathtub_0154.ply")))
    o3d.utility.random.seed(seed)
    xyz = np.asarray(mesh.sample_points_uniformly(1024).points)
    return normalize_unit_sphere(xyz[:, [0, 2, 1]])  # the raw mesh is z-up, ModelNet40 training data y-up


def test_pointnet_loads_strictly_and_recognises_the_bathtub():
    classifier = load_pointnet_classifier()
    with torch.no_grad():
        probs = classifier(torch.from_numpy(_bathtub_points())[None]).softmax(-1)[0]
    assert MODELNET40_CLASSES[1] == "bathtub"
    assert int(probs.argmax()) == MODELNET40_CLASSES.index("bathtub")
    # The feature-only checkpoint is the classifier's feature extractor.
    features = load_pointnet_features()
    for name, tensor in features.state_dict().items():
        assert torch.equal(tensor, classifier.feature_model.state_dict()[name])


def test_pointnet_strict_load_rejects_a_mismatched_state_dict(tmp_path):
    state = PointNetFeatures().state_dict()
    state.pop("conv5.bias")
    torch.save(state, tmp_path / "broken.t7")
    with pytest.raises(WeightsNotFoundError, match=r"conv5\.bias"):
        load_pointnet_features(tmp_path / "broken.t7")


def test_view_encoder_uses_imagenet_weights_on_a_real_render():
    from PIL import Image

    path = data_path("text2shape_sample", "test_shapes", "791c14d53bd565f56ba14bfd91a75020")
    rgba = np.asarray(Image.open(path / "791c14d53bd565f56ba14bfd91a75020.png").convert("RGBA")).astype(np.float32)
    alpha = rgba[..., 3:] / 255.0
    rgb = (rgba[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)  # on white, like our renders
    encoder = ViewEncoder(FrozenEncoderConfig(view_size=224))
    pooled = encoder.encode(rgb[None])
    assert pooled.shape == (1, 1280)
    top5 = np.argsort(-encoder.imagenet_logits(pooled)[0])[:5]
    assert 559 in top5  # ImageNet "folding chair": the caption says "a simple chair ... stainless steel"


# ---------------------------------------------------------------- real Text2Shape features, cache and index


@pytest.fixture(scope="module")
def text2shape_features():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingShapeWarning)
        samples = load_text2shape(config=ShapeSampleConfig.from_dict({"n_points": 2048, "views": {"size": 64}}))
    return compute_features(samples, FrozenEncoderConfig(view_size=64, point_tokens=8), progress=False)


@pytest.fixture(scope="module")
def index(text2shape_features):
    torch.manual_seed(0)
    model = TriModalRetrievalModel(RetrievalConfig(dim=32, hidden=64)).eval()
    return ShapeIndex.build(model, text2shape_features)


def test_real_features_are_consistent(text2shape_features):
    f = text2shape_features
    assert len(f) == 11 and f.point_tokens.shape == (11, 8, 1024) and f.views.shape == (11, 6, 1280)
    assert len(f.captions) == len(f.caption_shape) == f.text.shape[0] >= 11
    assert np.allclose(np.linalg.norm(f.text, axis=1), 1.0, atol=1e-4)
    # Different views of a shape give different features (the renders differ per view).
    assert not np.allclose(f.views[0, 0], f.views[0, 1])
    # Token colour statistics are real colours in [0, 1].
    assert f.token_geometry[..., 3:6].min() >= 0 and f.token_geometry[..., 3:6].max() <= 1


def test_feature_cache_round_trip_and_key_check(tmp_path, text2shape_features):
    path = text2shape_features.save(tmp_path / "f.npz", key="k1")
    loaded = ShapeFeatures.load(path, key="k1")
    assert loaded.shape_ids == text2shape_features.shape_ids and loaded.captions == text2shape_features.captions
    assert np.allclose(loaded.point_tokens, text2shape_features.point_tokens, rtol=1e-2, atol=1e-2)
    with pytest.raises(FeatureCacheError, match="other settings"):
        ShapeFeatures.load(path, key="k2")
    sub = text2shape_features.subset([3, 1])
    assert sub.shape_ids == [text2shape_features.shape_ids[3], text2shape_features.shape_ids[1]]
    assert all(text2shape_features.captions.index(c) >= 0 for c in sub.captions)


def test_training_on_real_features_lowers_the_loss(text2shape_features):
    f = text2shape_features
    cfg = RetrievalConfig(dim=32, hidden=64, dropout=0.0)
    batch = (
        torch.from_numpy(f.point_tokens[f.caption_shape]),
        torch.from_numpy(f.token_geometry[f.caption_shape]),
        torch.from_numpy(f.views[f.caption_shape]),
        torch.from_numpy(f.text),
    )
    torch.manual_seed(0)
    before = float(TriModalRetrievalModel(cfg).eval().losses(*batch)["retrieval"].detach())
    train = RetrievalTrainConfig(optim=OptimConfig(lr=3e-3, epochs=25, warmup_epochs=0), batch_size=11)
    model = fit(cfg, f, train, progress=False)
    assert float(model.losses(*batch)["retrieval"].detach()) < 0.5 * before


def test_shape_index_round_trip_and_fast_load(tmp_path, index):
    path = index.save(tmp_path / "index.npz")
    t0 = time.perf_counter()
    loaded = ShapeIndex.load(path, text_encoder=index.text_encoder)
    assert time.perf_counter() - t0 < 2.0
    text = "a round table with three legs"
    ids, scores = index.query_text(text, k=3)
    ids2, scores2 = loaded.query_text(text, k=3)
    assert ids == ids2 and np.allclose(scores, scores2)
    assert len(ids) == 3 and np.all(np.diff(scores) <= 0)
    # Scores are the cosine similarities of the whole index, best first.
    everything = loaded.shape_embeddings @ loaded.embed_text([text])[0]
    assert np.isclose(scores[0], everything.max(), atol=1e-6)
    captions, _ = loaded.query_shape(ids[0], k=2)
    assert len(captions) == 2 and all(c in loaded.captions for c in captions)


def test_shape_index_rejects_other_formats(tmp_path):
    np.savez(tmp_path / "x.npz", header=np.array('{"format": "ovseg3d.shape_index", "version": 99}'))
    with pytest.raises(ShapeIndexError, match="version 99"):
        ShapeIndex.load(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", something=np.zeros(3))
    with pytest.raises(ShapeIndexError, match="not a readable shape index"):
        ShapeIndex.load(tmp_path / "y.npz")
    with pytest.raises(FileNotFoundError):
        ShapeIndex.load(tmp_path / "missing.npz")


@pytest.mark.parametrize(
    ("query", "k", "message"),
    [
        ("", 5, "empty"),
        ("   \n", 5, "empty"),
        ("a chair", 0, "at least 1"),
        ("a chair", 12, "larger than the index"),
        ("a chair", True, "integer"),
        ("a chair", 2.5, "integer"),
        (b"\xff\xfe chair", 5, "not valid UTF-8"),
        ("x" * 100_000, 5, "100000 characters"),
        (None, 5, "must be a string"),
    ],
)
def test_bad_queries_raise_clear_errors(index, query, k, message):
    with pytest.raises(RetrievalQueryError, match=message):
        index.query_text(query, k=k)
    assert issubclass(RetrievalQueryError, ValueError)


def test_utf8_bytes_and_unknown_shapes(index):
    ids, _ = index.query_text(b"a black plastic chair", k=1)
    assert ids[0] in index.shape_ids
    with pytest.raises(RetrievalQueryError, match="not in the index"):
        index.query_shape("no-such-shape", k=1)


def test_openclip_towers_as_optional_frozen_encoders(tmp_path):
    """Plumbing only: a RANDOM ViT-S-32 (no CLIP weights exist here) through the OpenCLIP option."""
    from ovseg3d_core.encoders.openclip import OpenCLIPConfig, OpenCLIPTextEncoder
    from ovseg3d_core.retrieval.frozen_encoders import OpenCLIPViewEncoder, make_encoders

    config = FrozenEncoderConfig(
        view_backbone="openclip",
        text_backbone="openclip",
        openclip=OpenCLIPConfig(architecture="ViT-S-32", allow_random_weights=True),
    )
    views, texts = make_encoders(config)
    assert isinstance(views, OpenCLIPViewEncoder) and isinstance(texts, OpenCLIPTextEncoder)
    assert views.model is texts.model  # one model serves both towers
    rng = np.random.default_rng(0)
    out = views.encode(rng.integers(0, 255, (1, 2, 64, 64, 3), dtype=np.uint8))
    assert out.shape == (1, 2, views.dim) and np.allclose(np.linalg.norm(out, axis=-1), 1, atol=1e-4)
    model = TriModalRetrievalModel(
        RetrievalConfig(dim=16, hidden=32, view_dim=views.dim, text_dim=texts.dim, n_views=2)
    )
    emb = model.encode_shape(torch.randn(1, 4, 1024), torch.rand(1, 4, 9), torch.from_numpy(out))
    assert emb.shape == (1, 16)
    assert model.encode_text(torch.from_numpy(texts.encode(["a red chair"]))).shape == (1, 16)
    without_weights = FrozenEncoderConfig(view_backbone="openclip", openclip=OpenCLIPConfig(architecture="ViT-S-32"))
    assert without_weights.openclip_checkpoint == ""
    with pytest.raises(WeightsNotFoundError, match="local checkpoint"):
        make_encoders(without_weights)
    # openclip_checkpoint is where both towers' weights come from
    checkpoint = tmp_path / "vit-s-32.pt"
    torch.save(views.model.state_dict(), checkpoint)
    from_file = without_weights.replace(text_backbone="openclip", openclip_checkpoint=str(checkpoint))
    file_views, file_texts = make_encoders(from_file)
    assert file_views.model is file_texts.model
    np.testing.assert_array_equal(file_texts.encode(["a red chair"]), texts.encode(["a red chair"]))
    renders = np.random.default_rng(1).integers(0, 255, (1, 2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(file_views.encode(renders), views.encode(renders))
    missing = tmp_path / "absent.pt"
    with pytest.raises(WeightsNotFoundError, match=str(missing)):
        make_encoders(from_file.replace(openclip_checkpoint=str(missing)))


def test_retrieval_panel_png(tmp_path):
    from PIL import Image

    from ovseg3d_core.viz.retrieval_panel import save_retrieval_panel

    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    path = save_retrieval_panel(
        ["a red chair", "a blue table"],
        [[red] * 5, [red] * 3],
        tmp_path / "panel.png",
        scores=[[0.9, 0.8, 0.7, 0.6, 0.5], [0.4, 0.3, 0.2]],
        correct=[[True, False, False, False, False], [False, False, True]],
    )
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 100 and image.shape[1] > 300
    assert ((image[..., 0] > 200) & (image[..., 1] < 50)).sum() > 1000  # the red renders are drawn
    with pytest.raises(ValueError, match="one list of renders per query"):
        save_retrieval_panel(["q"], [], tmp_path / "bad.png")
