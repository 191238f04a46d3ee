"""ShapeIndex search: exact below ``exact_below`` shapes, faiss IVF above; recall, saving and loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ovseg3d_core.config import ConfigError
from ovseg3d_core.retrieval.index import (
    INDEX_VERSION,
    InvertedFileSearch,
    ShapeIndex,
    ShapeIndexConfig,
    ShapeIndexError,
    top_k,
)

DIM = 64
RECALL_BOUND = 0.95  # recall@5 of the approximate index vs exact search on the clustered set below


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int, seed: int, dim: int = DIM, categories: int = 20, per_category: int = 10) -> np.ndarray:
    """Unit embeddings in categories of sub-clusters (shape types of shapes), as bench_ann.py draws them."""
    rng = np.random.default_rng(0)  # the same clusters for every seed
    tops = unit(rng.standard_normal((categories, dim)))
    subs = unit(
        np.repeat(tops, per_category, axis=0) + 0.8 * unit(rng.standard_normal((categories * per_category, dim)))
    )
    draw = np.random.default_rng(seed)
    return unit(subs[draw.integers(0, len(subs), n)] + 0.7 * unit(draw.standard_normal((n, dim))))


def make_index(embeddings: np.ndarray, config: ShapeIndexConfig | None = None, **kwargs) -> ShapeIndex:
    """A ShapeIndex over ``embeddings`` with a two-caption bank and a random MiniLM -> DIM text adapter."""
    rng = np.random.default_rng(1)
    adapter = {
        "w1": rng.standard_normal((384, 32)).astype(np.float32) * 0.1,
        "b1": np.zeros(32, np.float32),
        "w2": rng.standard_normal((32, embeddings.shape[1])).astype(np.float32) * 0.1,
        "b2": np.zeros(embeddings.shape[1], np.float32),
    }
    captions = ["a chair", "a table"]
    return ShapeIndex(
        [f"shape{i:06d}" for i in range(len(embeddings))],
        embeddings,
        captions,
        unit(rng.standard_normal((2, embeddings.shape[1]))),
        np.array([0, 1]),
        adapter,
        config=config,
        **kwargs,
    )


@pytest.fixture(scope="module")
def shapes() -> np.ndarray:
    return clustered(8000, seed=2)


@pytest.fixture(scope="module")
def approximate(shapes) -> ShapeIndex:
    index = make_index(shapes, ShapeIndexConfig(exact_below=5000))
    index.approximate_index()
    return index


def exact_rows(embeddings: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    return top_k(embeddings @ query, k)


def test_exact_below_the_threshold(shapes):
    index = make_index(shapes)  # default threshold 50,000
    assert not index.approximate and ShapeIndexConfig().exact_below == 50_000
    for query in clustered(20, seed=3):
        rows, scores = index.search(query, 5)
        np.testing.assert_array_equal(rows, exact_rows(shapes, query, 5))
        np.testing.assert_allclose(scores, (shapes @ query)[rows], rtol=1e-6)
    assert index._ann is None  # exact search never builds an approximate index


def test_approximate_above_the_threshold_meets_the_recall_bound(shapes, approximate):
    assert approximate.approximate
    search = approximate.approximate_index()
    assert isinstance(search, InvertedFileSearch)
    lists = len(search.centroids)
    assert lists == min(round(4 * np.sqrt(len(shapes))), len(shapes) // 39) and search.index.ntotal == len(shapes)
    queries = clustered(300, seed=4)
    hits = []
    for query in queries:
        rows, scores = approximate.search(query, 5)
        assert len(rows) == 5 and np.all(np.diff(scores) <= 0)
        np.testing.assert_allclose(scores, (shapes @ query)[rows], rtol=1e-6)  # scores are exact cosines
        hits.append(len(set(rows.tolist()) & set(exact_rows(shapes, query, 5).tolist())) / 5)
    recall = float(np.mean(hits))
    print(f"recall@5 = {recall:.4f} over {len(queries)} queries ({lists} lists, {search.index.nprobe} probed)")
    assert recall >= RECALL_BOUND
    # Fewer probes trade recall for speed; probing every list is exact.
    config = ShapeIndexConfig(exact_below=5000, ann_probes=lists)
    everything = make_index(shapes, config, ann_arrays=(search.centroids, search.assignment))
    for query in queries[:50]:
        np.testing.assert_array_equal(everything.search(query, 5)[0], exact_rows(shapes, query, 5))


def test_text_queries_go_through_the_approximate_index(approximate, shapes):
    """The real MiniLM encoder and adapter, then the approximate search."""
    text = "a wooden chair with four legs"
    ids, scores = approximate.query_text(text, k=5)
    embedding = approximate.embed_text([text])[0]
    rows, expected = approximate.search(embedding, 5)
    assert ids == [approximate.shape_ids[i] for i in rows]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_save_load_round_trip_keeps_the_approximate_index(tmp_path, approximate, monkeypatch):
    path = approximate.save(tmp_path / "index.npz")
    with np.load(path) as data:
        header = json.loads(str(data["header"]))
        assert header["version"] == INDEX_VERSION == 2 and header["ann"]["shapes"] == len(approximate)
        assert data["ann_centroids"].shape == approximate.approximate_index().centroids.shape

    def no_training(*args, **kwargs):
        raise AssertionError("a loaded index must not train again")

    monkeypatch.setattr(InvertedFileSearch, "train", no_training)
    loaded = ShapeIndex.load(path, config=ShapeIndexConfig(exact_below=5000))
    for query in clustered(30, seed=5):
        rows, scores = approximate.search(query, 5)
        rows2, scores2 = loaded.search(query, 5)
        np.testing.assert_array_equal(rows, rows2)
        np.testing.assert_array_equal(scores, scores2)
    # With the default threshold the same file is searched exactly.
    assert not ShapeIndex.load(path).approximate


def test_version_1_files_load_and_train_on_first_use(tmp_path, shapes):
    small = make_index(shapes)
    path = small.save(tmp_path / "v1.npz")
    with np.load(path) as data:
        arrays = dict(data)
    arrays["header"] = np.array(json.dumps({"format": "ovseg3d.shape_index", "version": 1, "metadata": {}}))
    np.savez(tmp_path / "old.npz", **arrays)
    loaded = ShapeIndex.load(tmp_path / "old.npz", config=ShapeIndexConfig(exact_below=5000))
    assert loaded.approximate and loaded._ann is None
    rows, _ = loaded.search(shapes[17], 5)
    assert rows[0] == 17 and loaded._ann is not None


def test_saving_is_atomic(tmp_path, approximate, monkeypatch):
    """A write that fails half-way leaves the previous file intact and no temporary file behind."""
    path = approximate.save(tmp_path / "index.npz")
    before = path.read_bytes()

    def disk_full(fh, **arrays):
        fh.write(b"PK\x03\x04 partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space"):
        approximate.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["index.npz"]
    ShapeIndex.load(path)


def rewrite(path, out, **changes):
    with np.load(path) as data:
        arrays = dict(data)
    arrays.update(changes)
    np.savez(out, **arrays)
    return out


def test_bad_files_give_clear_errors(tmp_path, approximate):
    config = ShapeIndexConfig(exact_below=5000)
    path = approximate.save(tmp_path / "index.npz")
    header = json.loads(str(np.load(path)["header"]))
    future = rewrite(path, tmp_path / "future.npz", header=np.array(json.dumps({**header, "version": 99})))
    with pytest.raises(ShapeIndexError, match=r"version 99, expected one of \[1, 2\]"):
        ShapeIndex.load(future)
    other = rewrite(path, tmp_path / "other.npz", header=np.array(json.dumps({**header, "format": "x"})))
    with pytest.raises(ShapeIndexError, match="not a shape index"):
        ShapeIndex.load(other)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    for bad in (truncated, garbage):
        with pytest.raises(ShapeIndexError, match="not a readable shape index"):
            ShapeIndex.load(bad, config=config)
    search = approximate.approximate_index()
    lists = search.assignment.astype(np.int32)
    lists[5] = len(search.centroids)
    out_of_range = rewrite(path, tmp_path / "lists.npz", ann_lists=lists)
    with pytest.raises(ShapeIndexError, match="outside its"):
        ShapeIndex.load(out_of_range, config=config)
    short = rewrite(path, tmp_path / "short.npz", ann_lists=lists[:-1])
    wide = rewrite(path, tmp_path / "wide.npz", ann_centroids=np.zeros((len(search.centroids), DIM + 1), np.float32))
    for bad in (short, wide):
        with pytest.raises(ShapeIndexError, match="does not fit"):
            ShapeIndex.load(bad, config=config)
    missing = tmp_path / "missing.npz"
    with np.load(path) as data:
        np.savez(missing, **{k: data[k] for k in data.files if k != "ann_lists"})
    with pytest.raises(ShapeIndexError, match="not a readable shape index"):
        ShapeIndex.load(missing, config=config)


def test_config_ranges():
    with pytest.raises(ConfigError, match="exact_below"):
        ShapeIndexConfig(exact_below=0)
    with pytest.raises(ConfigError, match="ann_probes"):
        ShapeIndexConfig(ann_probes=0)
    names = {spec.name: spec.description for spec in ShapeIndexConfig.parameters()}
    assert {"exact_below", "ann_lists", "ann_probes"} <= set(names) and all(names.values())
