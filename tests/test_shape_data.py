"""Retrieval data: Text2Shape voxels + captions, ShapeNet OBJ meshes, procedural shapes, renders, cache."""

from __future__ import annotations

import csv
import gzip
import re
import warnings
from itertools import combinations

import numpy as np
import pytest

from ovseg3d_core.data.root import data_path
from ovseg3d_core.data.shapes.dataset import ShapeCacheError, ShapeDataset
from ovseg3d_core.data.shapes.mesh import ColoredMesh, ShapeDataError
from ovseg3d_core.data.shapes.procedural_captions import COLOR_WORDS, write_captions
from ovseg3d_core.data.shapes.procedural_dataset import (
    ProceduralDatasetConfig,
    generate_procedural_dataset,
    procedural_dataset,
    procedural_sample,
    procedural_shape,
    procedural_splits,
)
from ovseg3d_core.data.shapes.procedural_shapes import COLORS
from ovseg3d_core.data.shapes.render import ViewRenderConfig
from ovseg3d_core.data.shapes.sample import ShapeSampleConfig
from ovseg3d_core.data.shapes.shapenet import MaterialWarning, load_shapenet_meshes, read_obj_mesh
from ovseg3d_core.data.shapes.text2shape import (
    MissingShapeWarning,
    load_text2shape,
    read_nrrd_voxels,
    read_text2shape_captions,
    text2shape_dataset,
)
from ovseg3d_core.paths import CACHE_ENV

T2S = data_path("text2shape_sample")
SMALL = ShapeSampleConfig(n_points=1024, views=ViewRenderConfig(size=64))


@pytest.fixture(scope="module")
def text2shape_samples():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingShapeWarning)
        return {s.shape_id: s for s in load_text2shape()}


def _csv_rows() -> list[dict[str, str]]:
    with (T2S / "test_captions.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


# --- Text2Shape ---------------------------------------------------------------------------------


def test_nrrd_voxel_grids_are_occupied_and_coloured():
    paths = sorted((T2S / "test_shapes").glob("*/*.nrrd"))
    assert len(paths) == 11
    all_colours = []
    for path in paths:
        grid = read_nrrd_voxels(path)
        assert grid.rgba.shape == (32, 32, 32, 4) and grid.rgba.dtype == np.uint8
        count = int(grid.occupied.sum())
        assert 0 < count < 32**3, path
        all_colours.append(grid.rgba[grid.occupied][:, :3])
    colours = np.concatenate(all_colours)
    assert len(np.unique(colours, axis=0)) > 100, "voxel colours collapsed to a few values"


def test_voxel_shapes_are_y_up(text2shape_samples):
    """Chairs are taller than wide, tables wider than tall: checks the NRRD axis order and spacing."""
    for sample in text2shape_samples.values():
        extent = np.ptp(sample.points[:, :3], axis=0)
        if sample.category == "chair":
            assert extent[1] >= extent[[0, 2]].max() * 0.95, sample.shape_id
        else:
            assert extent[1] < extent[[0, 2]].max(), sample.shape_id


def test_voxel_colours_match_captions(text2shape_samples):
    brown = text2shape_samples["374bec02e71fe06528b4c5ec471dc963"].points[:, 3:].mean(axis=0)  # "brown colored"
    black = text2shape_samples["b654fef8eb98e99d65ba78ad9601cf1b"].points[:, 3:].mean(axis=0)  # "it is black"
    assert brown[0] > brown[1] > brown[2]
    assert black.max() < 0.25
    for sample in text2shape_samples.values():
        assert sample.points.dtype == np.float32 and sample.points.shape == (8192, 6)
        assert sample.points[:, 3:].min() >= 0.0 and sample.points[:, 3:].max() <= 1.0


def test_caption_join_reports_missing_shapes():
    rows = _csv_rows()
    models = read_text2shape_captions(T2S / "test_captions.csv")
    assert sum(len(m.captions) for m in models.values()) == len(rows) == 17
    shape_dirs = {p.name for p in (T2S / "test_shapes").iterdir() if p.is_dir()}
    expected_missing = sorted({r["modelId"] for r in rows} - shape_dirs)
    assert len(expected_missing) == 5

    with pytest.warns(MissingShapeWarning) as record:
        samples = load_text2shape(config=SMALL)
    message = " ".join(str(w.message) for w in record if issubclass(w.category, MissingShapeWarning))
    assert all(mid in message for mid in expected_missing)
    assert {s.shape_id for s in samples} == shape_dirs and len(samples) == 11
    by_id = {s.shape_id: s for s in samples}
    for row in rows:
        if row["modelId"] in by_id:
            sample = by_id[row["modelId"]]
            assert row["description"] in sample.captions
            assert sample.category == row["category"].lower()
    assert sum(len(s.captions) for s in samples) == 17 - 5
    assert len(by_id["791c14d53bd565f56ba14bfd91a75020"].captions) == 2


def test_renders_are_non_empty_and_differ_per_view(text2shape_samples):
    for sample in text2shape_samples.values():
        assert sample.views.shape == (6, 224, 224, 3) and sample.views.dtype == np.uint8
        foreground = (sample.views < 250).any(axis=-1).mean(axis=(1, 2))
        assert (foreground > 0.02).all(), sample.shape_id
        for a, b in combinations(range(6), 2):
            assert not np.array_equal(sample.views[a], sample.views[b]), (sample.shape_id, a, b)
        radius = np.linalg.norm(sample.points[:, :3], axis=1)
        assert 0.95 < radius.max() <= 1.0 + 1e-5


def test_bad_nrrd_files_raise_clear_errors(tmp_path):
    source = next((T2S / "test_shapes").glob("*/*.nrrd")).read_bytes()
    header, payload = source.split(b"\n\n", 1)
    cases = {
        "magic.nrrd": b"PNG" + source[3:],
        "truncated.nrrd": header + b"\n\n" + payload[: len(payload) // 2],
        "sizes.nrrd": header.replace(b"sizes: 4", b"sizes: 3") + b"\n\n" + payload,
        "short.nrrd": header.replace(b"encoding: gzip", b"encoding: raw") + b"\n\n" + gzip.decompress(payload)[:100],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ShapeDataError):
            read_nrrd_voxels(tmp_path / name)


# --- ShapeNet OBJ -------------------------------------------------------------------------------


def test_obj_meshes_match_the_readme_counts_and_normalisation():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaterialWarning)
        chair = read_obj_mesh(T2S / "meshes/chair/a682c4bf731e3af2ca6a405498436716.obj")
        table = read_obj_mesh(T2S / "meshes/table/8106aef3eb88f9e4578defb131c3ea1d.obj")
    for mesh, (n_vertices, n_faces) in ((chair, (631, 1668)), (table, (1011, 4208))):
        assert len(mesh.vertices) == n_vertices and len(mesh.triangles) == n_faces
        assert np.linalg.norm(np.ptp(mesh.vertices, axis=0)) == pytest.approx(1.0, abs=0.01)


def test_obj_material_quirks_warn_and_keep_diffuse_colours():
    with pytest.warns(MaterialWarning) as record:
        samples = {s.category: s for s in load_shapenet_meshes(config=SMALL)}
    messages = " ".join(str(w.message) for w in record)
    assert "model_normalized.mtl" in messages and "texture.jpg" in messages
    chair_rgb = samples["chair"].points[:, 3:]
    # The chair's dominant material is Kd 0.545 0.271 0.075 (brown) in its .mtl.
    assert np.isclose(chair_rgb, [0.545098, 0.270588, 0.0745098], atol=1e-4).all(axis=1).mean() > 0.3
    assert len(np.unique(chair_rgb, axis=0)) >= 2
    for sample in samples.values():
        assert (sample.views < 250).any(axis=-1).mean() > 0.02


def test_malformed_obj_files_are_rejected(tmp_path):
    cases = {
        "no_faces.obj": "v 0 0 0\nv 1 0 0\n",
        "short_vertex.obj": "v 0 0\nf 1 1 1\n",
        "bad_index.obj": "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n",
        "not_a_number.obj": "v 0 0 x\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ShapeDataError):
            read_obj_mesh(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        read_obj_mesh(tmp_path / "missing.obj")


# --- procedural shapes --------------------------------------------------------------------------

_SYNONYMS = sorted(((w, name) for name, words in COLOR_WORDS.items() for w in words), key=lambda x: -len(x[0]))


def _colour_names(text: str) -> set[str]:
    """Palette colours named in a caption (longest synonyms first, so 'dark brown' is not 'brown')."""
    found = set()
    for word, name in _SYNONYMS:
        pattern = rf"\b{re.escape(word)}\b"
        if re.search(pattern, text):
            found.add(name)
            text = re.sub(pattern, " ", text)
    return found


def test_generator_is_deterministic_per_seed_and_varies_across_seeds():
    config = ProceduralDatasetConfig(n_shapes=10, sample=SMALL)
    a, b = procedural_sample(3, config), procedural_sample(3, config)
    assert np.array_equal(a.points, b.points) and np.array_equal(a.views, b.views) and a.captions == b.captions
    other = procedural_sample(3, config.replace(seed=1))
    assert not np.array_equal(a.points, other.points) and a.captions != other.captions
    ids = [procedural_sample(i, config).shape_id for i in range(4)]
    assert len(set(ids)) == 4


def test_captions_agree_with_the_generated_parts():
    config = ProceduralDatasetConfig(n_shapes=120, seed=7)
    chair_words = re.compile(r"\b(chair|armchair|stool|seat)\b")
    table_word = re.compile(r"\btable\b")
    main_colour_named = 0
    for index in range(config.n_shapes):
        sample_shape = procedural_shape(index, config)
        captions = write_captions(sample_shape, np.random.default_rng([config.seed, index, 1]))
        assert len(set(captions)) == 5
        part_colours = {f.color for f in sample_shape.finishes.values()}
        main = sample_shape.finishes["seat" if sample_shape.category == "chair" else "top"]
        named = set()
        for caption in captions:
            if sample_shape.category == "chair":
                assert chair_words.search(caption) and not table_word.search(caption), caption
            else:
                assert table_word.search(caption) and not chair_words.search(caption), caption
            colours = _colour_names(caption)
            assert colours <= part_colours, (caption, part_colours)
            named |= colours
            legs = sample_shape.style["legs"]
            if re.search(r"\b(four|4)\b[^.,]*\blegs\b", caption):
                assert legs == "four", (caption, legs)
            if re.search(r"\b(three|3) [^.,]*legs\b|tripod", caption):
                assert legs == "three", (caption, legs)
            if "shelf" in caption:
                assert sample_shape.style.get("shelf") == "yes", caption
            if re.search(r"(?<!no )\b(arm ?rests|arms|armchair|arm chair)\b", caption):
                assert sample_shape.style["arms"] == "yes", caption
        main_colour_named += main.color in named or main.material == "glass"
    assert main_colour_named / config.n_shapes > 0.8


def test_part_colours_appear_in_the_points():
    config = ProceduralDatasetConfig(n_shapes=6, sample=SMALL)
    for index in range(6):
        shape = procedural_shape(index, config)
        sample = procedural_sample(index, config)
        assert sample.attributes == shape.attributes
        main = shape.finishes["seat" if shape.category == "chair" else "top"]
        assert np.isclose(sample.points[:, 3:], main.rgb, atol=1e-5).all(axis=1).any()
        assert np.linalg.norm(np.asarray(main.rgb) - COLORS[main.color]) < 0.1


def test_generated_corpus_covers_the_part_vocabulary():
    config = ProceduralDatasetConfig(n_shapes=300, seed=3)
    styles = [procedural_shape(i, config).style for i in range(config.n_shapes)]
    for key, values in {
        "back": {"solid", "slatted", "ladder", "none"},
        "legs": {"four", "pedestal", "sled", "three", "trestle"},
        "top_shape": {"round", "rectangular", "square", "oval"},
        "arms": {"yes", "no"},
        "shelf": {"yes", "no"},
    }.items():
        assert values <= {s[key] for s in styles if key in s}, key


def test_splits_are_disjoint_by_shape():
    config = ProceduralDatasetConfig(n_shapes=100, seed=5)
    splits = procedural_splits(config)
    assert [splits.count(s) for s in ("train", "val", "test")] == [80, 10, 10]
    corpus = generate_procedural_dataset(20, seed=5, config=ProceduralDatasetConfig(sample=SMALL))
    ids = {name: {s.shape_id for s in samples} for name, samples in corpus.items()}
    assert sum(len(v) for v in ids.values()) == 20
    for a, b in combinations(ids, 2):
        assert not ids[a] & ids[b]
    assert all(len(s.captions) == 5 for samples in corpus.values() for s in samples)


# --- cache --------------------------------------------------------------------------------------


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    config = ProceduralDatasetConfig(n_shapes=12, seed=2, sample=SMALL)
    built = procedural_dataset(config, progress=False)
    assert built.directory.parent == tmp_path / "shapes"
    reloaded = procedural_dataset(config, progress=False)
    assert reloaded.directory == built.directory
    assert reloaded.points.shape == (12, 1024, 6) and reloaded.views.shape == (12, 6, 64, 64, 3)
    for index in (0, 7, 11):
        fresh, cached = procedural_sample(index, config), reloaded[index]
        assert np.array_equal(fresh.points, cached.points) and np.array_equal(fresh.views, cached.views)
        assert (fresh.shape_id, fresh.captions, fresh.attributes) == (
            cached.shape_id,
            cached.captions,
            cached.attributes,
        )
    splits = procedural_splits(config)
    assert reloaded.indices("test").tolist() == [i for i, s in enumerate(splits) if s == "test"]
    assert procedural_dataset(config.replace(seed=3), progress=False).directory != built.directory

    (built.directory / "points.npy").unlink()
    with pytest.raises(ShapeCacheError):
        ShapeDataset(built.directory)


def test_text2shape_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with pytest.warns(MissingShapeWarning):
        dataset = text2shape_dataset(config=SMALL, progress=False)
    assert len(dataset) == 11 and dataset.split_names == ["test"]
    assert sum(len(c) for c in dataset.captions) == 12


def test_colored_mesh_rejects_bad_geometry():
    with pytest.raises(ShapeDataError):
        ColoredMesh.create(np.zeros((3, 3)), [[0, 1, 5]], [0.5, 0.5, 0.5])
    with pytest.raises(ShapeDataError):
        ColoredMesh.create(np.eye(3), [[0, 1, 2]], [1.5, 0.0, 0.0])
    with pytest.raises(ShapeDataError):
        ColoredMesh.from_voxels(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2, 3)), np.zeros(3), np.eye(3))
