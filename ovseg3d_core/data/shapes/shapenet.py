"""ShapeNet OBJ meshes with MTL diffuse colours -> :class:`ColoredMesh` / :class:`ShapeSample`.

A small OBJ/MTL reader rather than open3d's: ShapeNet exports reference ``model_normalized.mtl``
while the files here are named ``<modelId>.mtl``, and textures are often absent; open3d drops the
material colours in both cases, whereas the shape's look is mostly in the per-material ``Kd``.
So: a missing ``mtllib`` falls back to ``<stem>.mtl`` beside the OBJ (with a warning), a missing
texture keeps the material's ``Kd`` (with a warning), and faces without a material are grey.
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np

from ovseg3d_core.data.root import data_path
from ovseg3d_core.data.shapes.mesh import ColoredMesh, ShapeDataError
from ovseg3d_core.data.shapes.sample import ShapeSample, ShapeSampleConfig, make_shape_sample

SHAPENET_MESH_DIR = ("text2shape_sample", "meshes")
DEFAULT_GREY = (0.7, 0.7, 0.7)


class MaterialWarning(UserWarning):
    """An OBJ's material library or a texture it names is missing; diffuse colours are used instead."""


def read_mtl_colors(path: Path) -> dict[str, tuple[float, float, float]]:
    """Diffuse colour ``Kd`` per material name; warns about each ``map_Kd`` texture that is missing."""
    colors: dict[str, tuple[float, float, float]] = {}
    current = None
    for line_no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if tokens[0] == "newmtl":
            current = " ".join(tokens[1:])
            colors[current] = DEFAULT_GREY
        elif tokens[0] == "Kd" and current is not None:
            try:
                rgb = tuple(float(v) for v in tokens[1:4])
            except ValueError as exc:
                raise ShapeDataError(f"{path}:{line_no}: bad Kd colour {line!r}") from exc
            if len(rgb) != 3:
                raise ShapeDataError(f"{path}:{line_no}: Kd needs three values, got {line!r}")
            colors[current] = tuple(float(np.clip(v, 0.0, 1.0)) for v in rgb)  # type: ignore[assignment]
        elif tokens[0] == "map_Kd" and not (path.parent / tokens[-1]).is_file():
            warnings.warn(
                MaterialWarning(f"{path}: texture {tokens[-1]} of material {current!r} is missing; using its Kd"),
                stacklevel=3,
            )
    return colors


def _resolve_mtl(obj_path: Path, name: str) -> Path | None:
    candidate = obj_path.parent / name
    if candidate.is_file():
        return candidate
    fallback = obj_path.with_suffix(".mtl")
    if fallback.is_file():
        warnings.warn(
            MaterialWarning(f"{obj_path}: material library {name} not found; using {fallback.name}"), stacklevel=3
        )
        return fallback
    warnings.warn(MaterialWarning(f"{obj_path}: material library {name} not found; faces are grey"), stacklevel=3)
    return None


def read_obj_mesh(path: str | Path) -> ColoredMesh:
    """Read a Wavefront OBJ (polygons fan-triangulated, negative indices allowed) with per-face ``Kd``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OBJ file {path} does not exist")
    vertices: list[list[float]] = []
    triangles: list[tuple[int, int, int]] = []
    face_materials: list[str | None] = []
    materials: dict[str, tuple[float, float, float]] = {}
    current: str | None = None
    for line_no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        keyword = tokens[0]
        try:
            if keyword == "v":
                if len(tokens) < 4:
                    raise ValueError("a vertex needs x y z")
                vertices.append([float(x) for x in tokens[1:4]])
            elif keyword == "f":
                corners = [int(t.split("/")[0]) for t in tokens[1:]]
                corners = [c - 1 if c > 0 else len(vertices) + c for c in corners]
                for k in range(1, len(corners) - 1):
                    triangles.append((corners[0], corners[k], corners[k + 1]))
                    face_materials.append(current)
            elif keyword == "usemtl":
                current = " ".join(tokens[1:])
            elif keyword == "mtllib":
                mtl = _resolve_mtl(path, " ".join(tokens[1:]))
                if mtl is not None:
                    materials.update(read_mtl_colors(mtl))
        except ValueError as exc:
            raise ShapeDataError(f"{path}:{line_no}: malformed {keyword!r} line {line!r}") from exc
    if not triangles:
        raise ShapeDataError(f"{path}: no faces")
    colors = np.array([materials.get(m, DEFAULT_GREY) if m else DEFAULT_GREY for m in face_materials])
    try:
        return ColoredMesh.create(np.array(vertices), np.array(triangles), colors)
    except ShapeDataError as exc:
        raise ShapeDataError(f"{path}: {exc}") from exc


def load_shapenet_meshes(
    root: str | Path | None = None, config: ShapeSampleConfig | None = None, seed: int = 0
) -> list[ShapeSample]:
    """Every ``<root>/<category>/<modelId>.obj`` as an uncaptioned :class:`ShapeSample`."""
    root = Path(root) if root is not None else data_path(*SHAPENET_MESH_DIR)
    samples = []
    for obj in sorted(root.glob("*/*.obj")):
        mesh = read_obj_mesh(obj)
        shape_seed = zlib.crc32(obj.stem.encode()) ^ seed
        samples.append(make_shape_sample(obj.stem, obj.parent.name, mesh, [], config, shape_seed))
    return samples
