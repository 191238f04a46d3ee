"""A triangle mesh with one RGB colour per face: the form every shape source is turned into.

Text2Shape voxel grids, ShapeNet OBJ meshes and procedural chairs/tables all become a
:class:`ColoredMesh`, so point sampling and view rendering are written once. Per-face colour
(rather than textures) is what the sources actually carry: voxel colours, OBJ material ``Kd``
values and per-part colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class ShapeDataError(ValueError):
    """A shape file or shape description is malformed (bad header, empty geometry, bad colours)."""


@dataclass(frozen=True)
class ColoredMesh:
    """``vertices`` V x 3 float64, ``triangles`` T x 3 int64, ``face_colors`` T x 3 float32 in [0, 1]."""

    vertices: np.ndarray
    triangles: np.ndarray
    face_colors: np.ndarray

    def __post_init__(self) -> None:
        v, t, c = self.vertices, self.triangles, self.face_colors
        if v.ndim != 2 or v.shape[1] != 3 or t.ndim != 2 or t.shape[1] != 3 or c.shape != (len(t), 3):
            raise ShapeDataError(f"bad mesh arrays: vertices {v.shape}, triangles {t.shape}, colours {c.shape}")
        if len(t) == 0:
            raise ShapeDataError("mesh has no triangles")
        if t.min() < 0 or t.max() >= len(v):
            raise ShapeDataError(f"triangle indices out of range [0, {len(v)})")
        if not np.all(np.isfinite(v)):
            raise ShapeDataError("mesh vertices contain NaN or inf")
        if c.min() < 0 or c.max() > 1:
            raise ShapeDataError("face colours must lie in [0, 1]")

    @classmethod
    def create(cls, vertices: np.ndarray, triangles: np.ndarray, face_colors: np.ndarray) -> ColoredMesh:
        """Build with dtype conversion; ``face_colors`` may be one RGB for all faces."""
        triangles = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
        colors = np.asarray(face_colors, dtype=np.float32)
        if colors.shape == (3,):
            colors = np.broadcast_to(colors, (len(triangles), 3))
        return cls(np.asarray(vertices, dtype=np.float64).reshape(-1, 3), triangles, np.ascontiguousarray(colors))

    @classmethod
    def merge(cls, parts: Sequence[ColoredMesh]) -> ColoredMesh:
        if not parts:
            raise ShapeDataError("cannot merge an empty list of meshes")
        offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
        return cls(
            np.concatenate([p.vertices for p in parts]),
            np.concatenate([p.triangles + o for p, o in zip(parts, offsets, strict=True)]),
            np.concatenate([p.face_colors for p in parts]),
        )

    @classmethod
    def box(cls, center: Sequence[float], size: Sequence[float], color: Sequence[float]) -> ColoredMesh:
        """Axis-aligned box of full edge lengths ``size`` centred on ``center``."""
        corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
        faces = [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1]]
        faces += [[2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
        return cls.create(corners * np.asarray(size) + np.asarray(center), faces, color)

    @classmethod
    def cylinder(
        cls,
        start: Sequence[float],
        end: Sequence[float],
        radius: float,
        color: Sequence[float],
        segments: int = 16,
    ) -> ColoredMesh:
        """Closed cylinder from ``start`` to ``end`` (any direction), e.g. a leg, rail or pedestal."""
        start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
        axis = end - start
        length = np.linalg.norm(axis)
        if length <= 0 or radius <= 0:
            raise ShapeDataError(f"degenerate cylinder: length {length}, radius {radius}")
        axis /= length
        helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        u = np.cross(axis, helper)
        u /= np.linalg.norm(u)
        w = np.cross(axis, u)
        angles = np.linspace(0, 2 * np.pi, segments, endpoint=False)
        ring = radius * (np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * w)
        vertices = np.concatenate([start + ring, end + ring, [start, end]])
        i = np.arange(segments)
        j = (i + 1) % segments
        side = np.concatenate([np.stack([i, j, segments + j], 1), np.stack([i, segments + j, segments + i], 1)])
        caps = np.concatenate(
            [
                np.stack([np.full(segments, 2 * segments), j, i], 1),
                np.stack([np.full(segments, 2 * segments + 1), segments + i, segments + j], 1),
            ]
        )
        return cls.create(vertices, np.concatenate([side, caps]), color)

    @classmethod
    def from_voxels(cls, occupied: np.ndarray, colors: np.ndarray, origin: np.ndarray, axes: np.ndarray) -> ColoredMesh:
        """Exposed faces of a voxel grid: ``occupied`` X x Y x Z bool, ``colors`` X x Y x Z x 3 in [0, 1].

        Voxel (i, j, k) spans ``origin + [i, j, k] @ axes`` to ``origin + [i+1, j+1, k+1] @ axes``
        (``axes`` rows are the per-index step vectors, as in an NRRD ``space directions`` header).
        """
        if occupied.ndim != 3 or colors.shape != (*occupied.shape, 3):
            raise ShapeDataError(f"voxel occupancy {occupied.shape} and colours {colors.shape} do not match")
        if not occupied.any():
            raise ShapeDataError("voxel grid has no occupied voxel")
        padded = np.pad(occupied, 1)
        unit = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.float64)
        # For each axis and side: the corner indices (into ``unit``) of that cube face.
        face_corners = {
            (0, -1): [0, 1, 3, 2], (0, 1): [4, 6, 7, 5], (1, -1): [0, 4, 5, 1],
            (1, 1): [2, 3, 7, 6], (2, -1): [0, 2, 6, 4], (2, 1): [1, 5, 7, 3],
        }  # fmt: skip
        quads, quad_colors = [], []
        for (axis, side), corners in face_corners.items():
            neighbour = np.roll(padded, -side, axis=axis)[1:-1, 1:-1, 1:-1]
            cells = np.argwhere(occupied & ~neighbour)
            quads.append(cells[:, None, :] + unit[corners][None])
            quad_colors.append(colors[occupied & ~neighbour])
        corners_xyz = np.concatenate(quads).reshape(-1, 3) @ np.asarray(axes, dtype=np.float64) + np.asarray(origin)
        n_quads = len(corners_xyz) // 4
        base = 4 * np.arange(n_quads)[:, None]
        triangles = np.concatenate([base + np.array([0, 1, 2]), base + np.array([0, 2, 3])])
        face_colors = np.concatenate(quad_colors)
        return cls.create(corners_xyz, triangles, np.concatenate([face_colors, face_colors]))

    @property
    def face_areas(self) -> np.ndarray:
        a, b, c = (self.vertices[self.triangles[:, k]] for k in range(3))
        return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)

    def normalized(self) -> ColoredMesh:
        """Centre on the bounding-box centre and scale to a unit bounding sphere (max |v| = 1).

        Unit-sphere scaling is the convention PointNet's ModelNet40 weights were trained with.
        """
        used = self.vertices[np.unique(self.triangles)]
        center = 0.5 * (used.min(axis=0) + used.max(axis=0))
        radius = np.linalg.norm(used - center, axis=1).max()
        if radius <= 0:
            raise ShapeDataError("mesh has zero extent")
        return ColoredMesh((self.vertices - center) / radius, self.triangles, self.face_colors)

    def sample_points(self, n_points: int, rng: np.random.Generator) -> np.ndarray:
        """Area-uniform surface samples as N x 6 float32 (xyz, rgb in [0, 1])."""
        areas = self.face_areas
        total = areas.sum()
        if not total > 0:
            raise ShapeDataError("mesh has zero surface area")
        faces = rng.choice(len(areas), size=n_points, p=areas / total)
        r1, r2 = rng.random(n_points), rng.random(n_points)
        flip = r1 + r2 > 1
        r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
        tri = self.triangles[faces]
        a, b, c = (self.vertices[tri[:, k]] for k in range(3))
        xyz = a + r1[:, None] * (b - a) + r2[:, None] * (c - a)
        return np.concatenate([xyz, self.face_colors[faces]], axis=1).astype(np.float32)
