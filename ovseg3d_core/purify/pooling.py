"""Geometry-guided pooling (GeoPurify inference): diffuse noisy voxel features along learned affinities.

Each voxel's K nearest voxels (itself excluded) get weights softmax_j(scale * cos(s_i, s_j)) from the
student embeddings ``s``; the weights form a row-stochastic sparse matrix A and features are replaced
by A^T F (T = 19 steps, no residual), so a voxel ends up with the consensus of the surface region
the student says it belongs to. Because the map is linear, A^T (F W) = (A^T F) W for any projection
W: propagating C class logits gives exactly the scores of propagating D-dim features, at C/D of
the cost (the fast path). A "plain geometric" affinity (bilateral weights from distance, colour
and normals, no learned student) is the baseline that shows what the student adds.

Voxels are reordered along a Morton curve inside the operator so that neighbours sit close in
memory; callers always see their own order.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ovseg3d_core.config import Config, setting
from ovseg3d_core.geometry import knn


class PoolingError(ValueError):
    """Pooling inputs are empty, mis-shaped or not finite."""


@dataclass
class GeometricAffinityConfig(Config):
    """Bilateral weights for the student-free baseline: w_ij ∝ exp(-d²/2σd² - Δc²/2σc² + s(|n_i·n_j| - 1))."""

    distance_sigma: float = setting(0.05, "metres; Gaussian fall-off of the weight with distance", low=1e-4, high=10.0)
    color_sigma: float = setting(0.15, "RGB in [0, 1]; Gaussian fall-off with colour difference", low=1e-4, high=10.0)
    normal_sharpness: float = setting(5.0, "how strongly parallel normals are favoured", low=0.0, high=1000.0)


@dataclass
class PoolingConfig(Config):
    k: int = setting(96, "neighbours per voxel, the voxel itself excluded (GeoPurify: 96)", low=1, high=1024)
    scale: float = setting(20.0, "multiplier on the cosine of student embeddings before the softmax", low=0.0, high=1e4)
    iterations: int = setting(19, "propagation steps F <- A F (GeoPurify: 19)", low=0, high=1000)
    geometric: GeometricAffinityConfig = setting(
        GeometricAffinityConfig(), "weights of the student-free geometric affinity baseline"
    )


def morton_order(positions: np.ndarray, bits: int = 16) -> np.ndarray:
    """Permutation sorting points along a Z-order curve (spatial neighbours become memory neighbours)."""
    positions = np.asarray(positions, dtype=np.float64)
    low = positions.min(axis=0)
    extent = max(float((positions.max(axis=0) - low).max()), 1e-12)
    cells = np.clip((positions - low) / extent * ((1 << bits) - 1), 0, (1 << bits) - 1).astype(np.uint64)
    code = np.zeros(len(positions), dtype=np.uint64)
    for axis in range(3):
        x = cells[:, axis]
        for shift, mask in ((32, 0x1F00000000FFFF), (16, 0x1F0000FF0000FF), (8, 0x100F00F00F00F00F)):
            x = (x | (x << np.uint64(shift))) & np.uint64(mask)
        for shift, mask in ((4, 0x10C30C30C30C30C3), (2, 0x1249249249249249)):
            x = (x | (x << np.uint64(shift))) & np.uint64(mask)
        code |= x << np.uint64(axis)
    return np.argsort(code, kind="stable")


@dataclass
class PoolingOperator:
    """A row-stochastic affinity and its step count; :meth:`propagate` applies A^iterations.

    ``sorted_matrix`` is A in Morton order (``order[i]`` is the caller's index of sorted row i).
    """

    sorted_matrix: sp.csr_matrix
    order: np.ndarray
    iterations: int
    _torch_cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_voxels(self) -> int:
        return self.sorted_matrix.shape[0]

    @property
    def matrix(self) -> sp.csr_matrix:
        """A in the caller's voxel order."""
        inverse = np.empty_like(self.order)
        inverse[self.order] = np.arange(len(self.order))
        return self.sorted_matrix[inverse][:, inverse].tocsr()

    def _torch_matrix(self, dtype: np.dtype):
        """The sorted matrix as a torch CSR tensor with int32 indices (MKL's fast sparse-dense product)."""
        import torch

        key = np.dtype(dtype).name
        if key not in self._torch_cache:
            m = self.sorted_matrix
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                self._torch_cache[key] = torch.sparse_csr_tensor(
                    torch.from_numpy(m.indptr.astype(np.int32)),
                    torch.from_numpy(m.indices.astype(np.int32)),
                    torch.from_numpy(m.data.astype(dtype)),
                    size=m.shape,
                )
        return self._torch_cache[key]

    def propagate(self, values: np.ndarray) -> np.ndarray:
        """A^iterations @ values for N or N x C values (float32, or float64 when given float64)."""
        import torch

        values = np.asarray(values)
        if values.ndim not in (1, 2) or values.shape[0] != self.num_voxels:
            raise PoolingError(
                f"values have shape {values.shape}; expected ({self.num_voxels},) or ({self.num_voxels}, C)"
            )
        if not np.issubdtype(values.dtype, np.floating) or not np.isfinite(values).all():
            raise PoolingError("values to pool must be finite floats (NaN/inf found or non-float dtype)")
        dtype = np.float64 if values.dtype == np.float64 else np.float32
        column = values.ndim == 1
        sorted_values = np.ascontiguousarray(values[self.order].reshape(self.num_voxels, -1), dtype=dtype)
        if self.iterations and sorted_values.shape[1] and self.num_voxels > 1:
            matrix = self._torch_matrix(dtype)
            state = torch.from_numpy(sorted_values)
            with torch.inference_mode():
                for _ in range(self.iterations):
                    state = torch.mm(matrix, state)
            sorted_values = state.numpy()
        out = np.empty_like(sorted_values)
        out[self.order] = sorted_values
        return out[:, 0] if column else out


def _check_per_voxel(name: str, array: np.ndarray | None, n: int, width: int | None = None) -> np.ndarray | None:
    if array is None:
        return None
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != n or (width is not None and array.shape[1] != width):
        expected = f"({n}, {width if width is not None else 'D'})"
        raise PoolingError(f"{name} have shape {array.shape}; expected {expected}")
    if not np.isfinite(array).all():
        raise PoolingError(f"{name} contain NaN or inf")
    return array


class GeometryGuidedPooling:
    """Builds :class:`PoolingOperator` s from student embeddings or from plain geometry."""

    def __init__(self, config: PoolingConfig | None = None) -> None:
        self.config = config or PoolingConfig()

    def _neighbours(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Morton order of validated positions, and each voxel's K nearest others (distances, sorted ids)."""
        positions = np.asarray(positions)
        if positions.ndim != 2 or positions.shape[1] != 3:
            raise PoolingError(f"positions must be N x 3, got shape {positions.shape}")
        if len(positions) == 0:
            raise PoolingError("cannot pool an empty scene (no voxels)")
        if not np.isfinite(positions).all():
            raise PoolingError("positions contain NaN or inf")
        order = morton_order(positions)
        ordered = np.asarray(positions, dtype=np.float64)[order]
        k = min(self.config.k, len(ordered) - 1)
        if k == 0:
            return order, np.zeros((1, 0)), np.zeros((1, 0), dtype=np.int64)
        distances, neighbours = knn(ordered, k, exclude_self=True)
        return order, distances, neighbours

    def _operator(self, logits: np.ndarray, neighbours: np.ndarray, order: np.ndarray) -> PoolingOperator:
        """Row-softmax the N x K logits into a CSR matrix; a lone voxel keeps its own value."""
        n, k = neighbours.shape
        if k == 0:
            matrix = sp.identity(n, dtype=np.float32, format="csr")
        else:
            weights = np.exp(logits - logits.max(axis=1, keepdims=True))
            weights /= weights.sum(axis=1, keepdims=True)
            rows = np.arange(0, n * k + 1, k)
            matrix = sp.csr_matrix(
                (weights.astype(np.float32).ravel(), neighbours.astype(np.int32).ravel(), rows), shape=(n, n)
            )
            matrix.sort_indices()
        return PoolingOperator(matrix, order, self.config.iterations)

    def from_embeddings(self, positions: np.ndarray, embeddings: np.ndarray, chunk: int = 2048) -> PoolingOperator:
        """GeoPurify affinity: softmax over the K neighbours of ``scale`` x cosine of student embeddings."""
        embeddings = _check_per_voxel("embeddings", embeddings, len(np.asarray(positions)))
        order, _, neighbours = self._neighbours(positions)
        unit = embeddings[order].astype(np.float32)
        unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        cosine = np.empty(neighbours.shape, dtype=np.float32)
        for start in range(0, len(unit), chunk):
            stop = start + chunk
            cosine[start:stop] = np.matmul(unit[neighbours[start:stop]], unit[start:stop, :, None])[..., 0]
        return self._operator(self.config.scale * cosine, neighbours, order)

    def from_geometry(
        self, positions: np.ndarray, colors: np.ndarray | None = None, normals: np.ndarray | None = None
    ) -> PoolingOperator:
        """Student-free baseline: bilateral weights from distance, colour (0-1 or 0-255) and normals."""
        n = len(np.asarray(positions))
        colors = _check_per_voxel("colors", colors, n, 3)
        normals = _check_per_voxel("normals", normals, n, 3)
        order, distances, neighbours = self._neighbours(positions)
        geo = self.config.geometric
        logits = -(distances**2) / (2 * geo.distance_sigma**2)
        if colors is not None and neighbours.shape[1]:
            rgb = colors[order] / (255.0 if colors.max() > 1.0 else 1.0)
            logits -= ((rgb[neighbours] - rgb[:, None, :]) ** 2).sum(-1) / (2 * geo.color_sigma**2)
        if normals is not None and neighbours.shape[1]:
            unit = normals[order] / np.maximum(np.linalg.norm(normals[order], axis=1, keepdims=True), 1e-12)
            alignment = np.abs(np.einsum("nkd,nd->nk", unit[neighbours], unit))
            logits += geo.normal_sharpness * (alignment - 1.0)
        return self._operator(logits, neighbours, order)
