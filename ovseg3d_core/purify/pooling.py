"""Geometry-guided pooling (GeoPurify inference): diffuse noisy voxel features along learned affinities.

Each voxel's K nearest voxels (itself excluded) get weights softmax_j(scale * cos(s_i, s_j)) from the
student embeddings ``s``; the weights form a row-stochastic sparse matrix A and features are replaced
by A^T F (T = 19 steps, no residual), so a voxel ends up with the consensus of the surface region
the student says it belongs to. Because the map is linear, A^T (F W) = (A^T F) W for any projection
W: propagating C class logits gives exactly the scores of propagating D-dim features, at C/D of
the cost (the fast path). A "plain geometric" affinity (bilateral weights from distance, colour
and normals, no learned student) is the baseline that shows what the student adds; the product of
the two (their logits add) is the best measured purification here: the student's cosine carries
no distance, so alone it spreads weight evenly over the whole neighbourhood.

Voxels are reordered along a Morton curve inside the operator so that neighbours sit close in
memory; callers always see their own order. A has exactly K entries per row, so it is stored as two
N x K arrays (ELL: int32 neighbour ids, float32 weights), and float32 values are propagated by one
compiled kernel that runs all T steps: each row's K-sum stays in a vector register, which makes it
about twice as fast as MKL's CSR product per step on the benchmark crop, with bit-identical results.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp

from ovseg3d_core.config import Config, setting
from ovseg3d_core.geometry import knn, morton_codes, pack_voxel_keys, voxel_key_fields
from ovseg3d_core.jit import float32_vector, load_vector, multiply_add, parallel_launch, store_vector

_ALIGNMENT = 64
_GROUP = 32  # columns per kernel pass; wider inputs are propagated in groups


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
    threads: int = setting(0, "threads of the compiled propagation; 0 = all cores", low=0)
    geometric: GeometricAffinityConfig = setting(
        GeometricAffinityConfig(), "weights of the student-free geometric affinity baseline"
    )


def morton_order(positions: np.ndarray, bits: int = 16) -> np.ndarray:
    """Permutation sorting points along a Z-order curve (spatial neighbours become memory neighbours)."""
    positions = np.asarray(positions, dtype=np.float64)
    low = positions.min(axis=0)
    extent = max(float((positions.max(axis=0) - low).max()), 1e-12)
    cells = np.clip((positions - low) / extent * ((1 << bits) - 1), 0, (1 << bits) - 1)
    return np.argsort(morton_codes(cells), kind="stable")


def voxel_morton_codes(keys: np.ndarray) -> np.ndarray:
    """63-bit Morton codes of packed voxel keys (:func:`ovseg3d_core.geometry.pack_voxel_keys`).

    Each code depends on its own voxel only, so sorting by it (:func:`voxel_order`) gives every pair of
    voxels the same relative order whatever else the map holds: the order in which pooling breaks
    distance ties and sums a row's terms stays put while a map grows or loses voxels.
    """
    return morton_codes(voxel_key_fields(keys))


def voxel_order(keys: np.ndarray) -> np.ndarray:
    """Permutation sorting voxels by :func:`voxel_morton_codes` (a map-independent Z-order)."""
    return np.argsort(voxel_morton_codes(keys), kind="stable")


def voxel_keys_of(positions: np.ndarray, voxel_size: float) -> np.ndarray:
    """Packed keys of the voxels of edge ``voxel_size`` holding ``positions`` (for :func:`voxel_order`)."""
    return pack_voxel_keys(np.floor(np.asarray(positions, dtype=np.float64) / voxel_size).astype(np.int64))


@numba.njit(parallel=True, cache=True, nogil=True)
def _graph_rows(distances, neighbours):
    """Sort each row's ids ascending in place; returns each row's largest distance (the k-th neighbour's)."""
    n = neighbours.shape[0]
    farthest = np.zeros(n)
    for i in numba.prange(n):
        neighbours[i] = np.sort(neighbours[i])
        farthest[i] = distances[i].max()
    return farthest


@numba.njit(parallel=True, cache=True, nogil=True)
def _row_distances(rows, neighbours, order, positions, out):
    """float32 distance of row ``rows[r]`` (sorted index) to each of its neighbours, as :func:`knn` evaluates
    it: float64 ``(dx*dx + dy*dy) + dz*dz`` with d = query - neighbour, square-rooted, then rounded."""
    n, k = neighbours.shape
    for r in numba.prange(n):
        i = order[rows[r]]
        for j in range(k):
            m = order[neighbours[r, j]]
            dx = positions[i, 0] - positions[m, 0]
            dy = positions[i, 1] - positions[m, 1]
            dz = positions[i, 2] - positions[m, 2]
            out[r, j] = np.float32(np.sqrt((dx * dx + dy * dy) + dz * dz))


@numba.njit(parallel=True, cache=True, nogil=True)
def _unit_rows(values, out):
    """float32 rows of ``values`` scaled to unit length into ``out`` (rows of norm below 1e-12 divided by 1e-12)."""
    n, d = values.shape
    for i in numba.prange(n):
        total = np.float32(0.0)
        for j in range(d):
            v = np.float32(values[i, j])
            out[i, j] = v
            total += v * v
        norm = max(np.float32(np.sqrt(total)), np.float32(1e-12))
        for j in range(d):
            out[i, j] = out[i, j] / norm


@numba.njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _affinity_logits(
    rows, neighbours, values, order, unit, rgb, normals, scale, distance_weight, color_weight, sharpness
):
    """Logits of rows ``rows`` (sorted indices; voxel ``order[rows[r]]``) over their sorted ``neighbours``:
    scale x cos(unit) - distance_weight d^2 - color_weight |drgb|^2 + sharpness (|n.n| - 1).

    ``values`` holds the distances d and receives the logits (in place: one R x K array for both).
    Per-voxel arrays are in the caller's order; a term whose array has no rows is left out. One pass
    per row, no R x K x D temporaries (numpy's gathers took seconds and gigabytes on a 300k-voxel map).
    """
    n, k = neighbours.shape
    dims = unit.shape[1]
    for r in numba.prange(n):
        i = order[rows[r]]
        for j in range(k):
            m = order[neighbours[r, j]]
            value = -distance_weight * values[r, j] * values[r, j]
            if unit.shape[0] > 0:
                dot = np.float32(0.0)
                for d in range(dims):
                    dot += unit[i, d] * unit[m, d]
                value += scale * dot
            if rgb.shape[0] > 0:
                difference = np.float32(0.0)
                for c in range(3):
                    difference += (rgb[i, c] - rgb[m, c]) ** 2
                value -= color_weight * difference
            if normals.shape[0] > 0:
                alignment = np.float32(0.0)
                for c in range(3):
                    alignment += normals[i, c] * normals[m, c]
                value += sharpness * (abs(alignment) - np.float32(1.0))
            values[r, j] = value


@numba.njit(parallel=True, cache=True, nogil=True)
def _softmax_rows(values):
    """Row softmax of the R x K logits in ``values``, in place (a row's terms summed in neighbour-id order,
    as they are stored)."""
    n, k = values.shape
    for i in numba.prange(n):
        top = values[i].max()
        row = np.exp(values[i] - top)
        row /= row.sum()
        for j in range(k):
            values[i, j] = row[j]


@numba.njit(parallel=True, cache=True, nogil=True)
def _forward_hop(neighbours, frontier, level, hop):
    """Give level ``hop`` to the unlevelled neighbours of the ``frontier`` rows (writers agree on the value)."""
    for q in numba.prange(len(frontier)):
        i = frontier[q]
        for j in range(neighbours.shape[1]):
            m = neighbours[i, j]
            if level[m] < 0:
                level[m] = hop


@numba.njit(cache=True, nogil=True)
def move_rows(array, sources, targets):
    """Move rows ``sources`` of ``array`` to rows ``targets`` in place; both ascending (an order-preserving
    move, as when voxels are inserted into or evicted from the voxel order).

    Rows moving down go first, in ascending order, then rows moving up, in descending order: either
    way a row is written only after the row it overwrites has moved. Sequential: one pass of memory,
    no second array (the kNN graph of a million voxels is 768 MB).
    """
    width = array.shape[1]
    for q in range(len(sources)):
        source, target = sources[q], targets[q]
        if target < source:
            for j in range(width):
                array[target, j] = array[source, j]
    for q in range(len(sources) - 1, -1, -1):
        source, target = sources[q], targets[q]
        if target > source:
            for j in range(width):
                array[target, j] = array[source, j]


@numba.njit(parallel=True, cache=True, nogil=True)
def renumber_neighbours(neighbours, rows, rank_map, lost):
    """Neighbour ids of ``rows`` mapped through ``rank_map`` (old -> new index, -1 evicted); a row that
    lost a neighbour gets id 0 there and is flagged in ``lost``. Ascending rows stay ascending (the map
    keeps the order)."""
    for q in numba.prange(len(rows)):
        r = rows[q]
        for j in range(neighbours.shape[1]):
            moved = rank_map[neighbours[r, j]]
            if moved < 0:
                lost[r] = True
                moved = 0
            neighbours[r, j] = moved


@numba.njit(parallel=True, cache=True, nogil=True)
def reverse_hop(neighbours, starts, stops, long_row, long_rows, level, hop):
    """Give level ``hop`` to every row, among the ranges [starts, stops) and the long rows, with a neighbour at
    ``hop - 1`` (the reverse of :func:`_forward_hop`; the caller picks the rows that can reach the last level)."""
    k = neighbours.shape[1]
    for b in numba.prange(len(starts)):
        for r in range(starts[b], stops[b]):
            if level[r] >= 0 or long_row[r]:
                continue
            for j in range(k):
                if level[neighbours[r, j]] == hop - 1:
                    level[r] = hop
                    break
    for q in numba.prange(len(long_rows)):
        r = long_rows[q]
        if level[r] >= 0:
            continue
        for j in range(k):
            if level[neighbours[r, j]] == hop - 1:
                level[r] = hop
                break


@numba.njit(parallel=True, cache=True, nogil=True)
def _propagate_rows(neighbours, weights, state, scratch, rows, spans, zero_row):
    """A applied len(spans) times to the row-major float32 ``state`` (one row per operator row); step t
    updates the operator rows ``rows[spans[t, 0]:spans[t, 1]]``.

    ``zero_row`` is a tuple of ``lanes`` float32 zeros, so each width is its own compiled type
    signature. ``state`` and ``scratch`` take turns as source and target; the returned buffer holds
    the result. Each row sums its neighbours' rows in stored (ascending id) order, one multiply and
    one add per term, as a sequential CSR product does. The whole map is every row at every step. In
    a region (:meth:`PoolingOperator.region`) a row reads rows that the step before updated, or rows
    held at fixed values in both buffers, and sums the same terms in the same order as for the whole
    map, so its values are bit-identical. Rows keep their operator ids and Morton order, so no copy of
    the region's part of A is made and near rows share cache lines.
    """
    lanes = len(zero_row)
    source, target = state, scratch
    for t in range(len(spans)):
        for q in numba.prange(spans[t, 0], spans[t, 1]):
            i = rows[q]
            total = float32_vector(zero_row)
            for j in range(neighbours.shape[1]):
                total = multiply_add(total, weights[i, j], load_vector(source, neighbours[i, j] * lanes, total))
            store_vector(target, i * lanes, total)
        source, target = target, source
    return source


@numba.njit(parallel=True, cache=True, nogil=True)
def _propagate_rows_split(
    neighbours, weights, wide, wide_scratch, tail, tail_scratch, rows, spans, wide_zero, tail_zero
):
    """:func:`_propagate_rows` of two buffers at once (e.g. 16 + 4 columns): one pass over A for both."""
    wide_lanes, tail_lanes = len(wide_zero), len(tail_zero)
    for t in range(len(spans)):
        for q in numba.prange(spans[t, 0], spans[t, 1]):
            i = rows[q]
            wide_total, tail_total = float32_vector(wide_zero), float32_vector(tail_zero)
            for j in range(neighbours.shape[1]):
                row, weight = neighbours[i, j], weights[i, j]
                wide_total = multiply_add(wide_total, weight, load_vector(wide, row * wide_lanes, wide_total))
                tail_total = multiply_add(tail_total, weight, load_vector(tail, row * tail_lanes, tail_total))
            store_vector(wide_scratch, i * wide_lanes, wide_total)
            store_vector(tail_scratch, i * tail_lanes, tail_total)
        wide, wide_scratch = wide_scratch, wide
        tail, tail_scratch = tail_scratch, tail
    return wide, tail


def _layout(width: int) -> tuple[int, ...]:
    """Vector widths that hold ``width`` <= 32 columns with the fewest cache lines gathered per neighbour.

    A row of 4, 8, 16 or 32 float32 is a quarter, half, one or two cache lines, so in a 64-byte
    aligned buffer a gathered row never straddles a line; 17-24 columns go as 16 plus a 4- or
    8-lane tail in a second buffer (20 classes: 17% faster than padding to 32).
    """
    if 16 < width <= 24:
        return (16, 4 if width <= 20 else 8)
    return (next(lanes for lanes in (4, 8, 16, 32) if lanes >= width),)


def _aligned_rows(rows: int, lanes: int) -> np.ndarray:
    """An uninitialised rows x lanes float32 array whose rows start on cache-line boundaries."""
    raw = np.empty(rows * lanes + _ALIGNMENT // 4, dtype=np.float32)
    offset = (-raw.ctypes.data % _ALIGNMENT) // 4
    return raw[offset : offset + rows * lanes].reshape(rows, lanes)


def _propagate_group(
    neighbours,
    weights,
    rows,
    spans,
    initial: np.ndarray,
    at: np.ndarray | None,
    outputs: np.ndarray | None,
    threads: int,
) -> np.ndarray:
    """:func:`_propagate_rows` on at most 32 columns in zero-padded aligned buffers (see :func:`_layout`).

    ``initial`` holds the values of operator rows ``at`` (None: every row, in order); they are written
    to both buffers, so rows that no step updates are read at their initial values. Returns the result
    at operator rows ``outputs`` (None: every row), which the last step must update.
    """
    n, width, buffers, column = len(neighbours), initial.shape[1], [], 0
    for lanes in _layout(width):
        used = min(lanes, width - column)
        pair = _aligned_rows(n, lanes), _aligned_rows(n, lanes)
        if at is None:  # every row is updated at every step: the second buffer is only written
            pair[0][:, :used], pair[0][:, used:] = initial[:, column : column + used], 0.0
        else:  # the region's rows in both buffers; the others are never read (nor paged in)
            padded = np.zeros((len(at), lanes), dtype=np.float32)
            padded[:, :used] = initial[:, column : column + used]
            pair[0][at], pair[1][at] = padded, padded
        buffers.append((*pair, (np.float32(0.0),) * lanes, used))
        column += lanes
    with parallel_launch(threads):
        if len(buffers) == 1:
            ((state, scratch, zero, _),) = buffers
            results = (_propagate_rows(neighbours, weights, state, scratch, rows, spans, zero),)
        else:
            (wide, wide_scratch, wide_zero, _), (tail, tail_scratch, tail_zero, _) = buffers
            results = _propagate_rows_split(
                neighbours, weights, wide, wide_scratch, tail, tail_scratch, rows, spans, wide_zero, tail_zero
            )
    picked = slice(None) if outputs is None else outputs
    return np.concatenate([result[picked, :used] for result, (*_, used) in zip(results, buffers, strict=True)], axis=1)


def warm_up(threads: int = 0) -> float:
    """Compile (or load from numba's on-disk cache) the operator-build kernels, the kernels of an
    incremental update (kNN rows, row moves and renumbering, reverse hops) and the propagation kernel
    of every layout, with the argument types a purification passes; returns seconds.

    The first purification (and the first update) of a process pays this otherwise; a node can call
    it at start-up.
    """
    start = time.perf_counter()
    pooling = GeometryGuidedPooling(PoolingConfig(k=1, threads=threads))
    positions, colors = np.eye(2, 3), np.eye(2, 3, dtype=np.uint8)
    for dtype in (np.float64, np.float32):  # float32: the map's normals and the student's embeddings
        pooling.from_embeddings_and_geometry(positions, np.eye(2, dtype=dtype), colors, np.eye(2, 3, dtype=dtype))
    order = np.arange(2)
    pooling.neighbours(positions, order, np.arange(1))
    for count in (2, 200):  # the grid's fallback for the rows it leaves open: a few are scanned, more use a tree
        points = np.random.default_rng(0).random((count, 3))
        graph = np.empty((count, 1), dtype=np.float32), np.empty((count, 1), dtype=np.int32)
        knn(points, 1, exclude_self=True, backend="kdtree", out=graph)
    rows = np.zeros(1, dtype=np.int64)
    for dtype in (np.int32, np.float32, np.float64):  # graph ids, weights and per-voxel inputs
        move_rows(np.zeros((2, 1), dtype=dtype), rows, rows + 1)
    with parallel_launch(threads):
        renumber_neighbours(np.zeros((1, 1), dtype=np.int32), rows, np.zeros(1, dtype=np.int32), np.zeros(1, bool))
        reverse_hop(np.zeros((1, 1), dtype=np.int32), rows, rows + 1, np.zeros(1, bool), rows, np.zeros(1, np.int16), 1)
    operator = PoolingOperator(np.zeros((1, 1)), np.ones((1, 1)), np.zeros(1, dtype=np.int64), 1, threads)
    plan = operator.region(np.zeros(1, dtype=np.int64))
    for layout in {_layout(width) for width in range(1, _GROUP + 1)}:
        operator.propagate(np.zeros((1, sum(layout)), dtype=np.float32))
        plan.propagate(np.zeros((1, sum(layout)), dtype=np.float32))
    return time.perf_counter() - start


@dataclass
class PoolingOperator:
    """A row-stochastic affinity with K entries per row and its step count; :meth:`propagate` applies A^iterations.

    Row i of A (in Morton order; ``order[i]`` is the caller's index of sorted row i) has weights
    ``weights[i]`` on the sorted rows ``neighbours[i]`` (ascending).
    """

    neighbours: np.ndarray
    weights: np.ndarray
    order: np.ndarray
    iterations: int
    threads: int = 0

    def __post_init__(self) -> None:
        """The kernel reads rows by ``neighbours`` without bounds checks, so they are checked here once."""
        self.neighbours = np.ascontiguousarray(self.neighbours, dtype=np.int32)
        self.weights = np.ascontiguousarray(self.weights, dtype=np.float32)
        n = len(self.neighbours)
        if self.neighbours.ndim != 2 or self.weights.shape != self.neighbours.shape or len(self.order) != n:
            raise PoolingError("neighbours and weights must be N x K and order a permutation of N voxels")
        if self.neighbours.size and (self.neighbours.min() < 0 or self.neighbours.max() >= n):
            raise PoolingError("neighbour ids out of range of the operator's voxels")

    @classmethod
    def trusted(cls, neighbours: np.ndarray, weights: np.ndarray, order: np.ndarray, iterations: int, threads: int = 0):
        """An operator from arrays this module built (int32 ids in range, float32 weights): no O(NK) check."""
        operator = cls.__new__(cls)
        operator.neighbours, operator.weights, operator.order = neighbours, weights, order
        operator.iterations, operator.threads = iterations, threads
        return operator

    @property
    def num_voxels(self) -> int:
        return len(self.neighbours)

    def region(self, rows: np.ndarray, hops: int | None = None) -> RegionPlan:
        """How to recompute A^iterations at the sorted rows ``rows`` alone (see :class:`RegionPlan`).

        Row i after step t reads its neighbours after step t - 1, so the outputs need the inputs of
        every row within ``iterations`` hops (following neighbour ids) and step t only the rows within
        ``iterations - t`` hops, listed in the operator's (Morton) order. With ``hops`` below
        ``iterations`` the support stops ``hops`` hops out and the rows beyond it are held at values
        the caller gives (an approximation: a value there reaches an output only along a walk of
        more than ``hops`` steps).
        """
        steps = self.iterations
        depth = steps if hops is None else max(0, min(int(hops), steps))
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        level = np.full(self.num_voxels, -1, dtype=np.int16)
        level[rows] = 0
        frontier = rows
        for hop in range(1, depth + (depth < steps) + 1):  # one more hop past a cut-short support: its boundary
            if not len(frontier):
                break
            with parallel_launch(self.threads):
                _forward_hop(self.neighbours, frontier, level, hop)
            frontier = np.flatnonzero(level == hop)
        support = np.flatnonzero((level >= 0) & (level <= depth))
        hop_count = level[support]
        updates = [support[hop_count <= steps - t].astype(np.int32) for t in range(1, steps + 1)]
        stops = np.cumsum([0] + [len(rows_t) for rows_t in updates], dtype=np.int64)
        boundary = np.flatnonzero(level == depth + 1) if depth < steps else np.zeros(0, dtype=np.int64)
        return RegionPlan(
            operator=self,
            ranks=support,
            boundary_ranks=boundary,
            row_ranks=rows,
            updates=np.concatenate([np.zeros(0, dtype=np.int32), *updates]),
            spans=np.stack([stops[:-1], stops[1:]], axis=1),
        )

    def _sorted_matrix(self) -> sp.csr_matrix:
        """A in Morton order as CSR."""
        n, k = self.neighbours.shape
        rows = np.arange(0, n * k + 1, k)
        return sp.csr_matrix((self.weights.ravel(), self.neighbours.ravel(), rows), shape=(n, n))

    @property
    def matrix(self) -> sp.csr_matrix:
        """A in the caller's voxel order."""
        inverse = np.empty_like(self.order)
        inverse[self.order] = np.arange(len(self.order))
        return self._sorted_matrix()[inverse][:, inverse].tocsr()

    def propagate(self, values: np.ndarray) -> np.ndarray:
        """A^iterations @ values for N or N x C values.

        float32 (and other non-float64 floats) run the compiled kernel and come back float32; float64
        stays float64 through scipy's CSR product (a slow, exact reference for tests).
        """
        values = np.asarray(values)
        if values.ndim not in (1, 2) or values.shape[0] != self.num_voxels:
            raise PoolingError(
                f"values have shape {values.shape}; expected ({self.num_voxels},) or ({self.num_voxels}, C)"
            )
        if not np.issubdtype(values.dtype, np.floating) or not np.isfinite(values).all():
            raise PoolingError("values to pool must be finite floats (NaN/inf found or non-float dtype)")
        column = values.ndim == 1
        values = values.reshape(self.num_voxels, -1)
        if values.dtype == np.float64:
            state, matrix = values[self.order], self._sorted_matrix()
            for _ in range(self.iterations):
                state = matrix @ state
            out = np.empty_like(state)
            out[self.order] = state
        else:
            out = np.empty(values.shape, dtype=np.float32)
            for start in range(0, values.shape[1], _GROUP):
                stop = min(start + _GROUP, values.shape[1])
                out[self.order, start:stop] = self._propagate_sorted(values[self.order, start:stop])
        return out[:, 0] if column else out

    def _propagate_sorted(self, group: np.ndarray) -> np.ndarray:
        """A^iterations of at most 32 columns in Morton order (:func:`_propagate_group`)."""
        rows = np.arange(self.num_voxels, dtype=np.int32)
        spans = np.tile(np.array([0, self.num_voxels], dtype=np.int64), (self.iterations, 1))
        return _propagate_group(self.neighbours, self.weights, rows, spans, group, None, None, self.threads)


@dataclass
class RegionPlan:
    """A^iterations restricted to some rows (:meth:`PoolingOperator.region`), in the caller's voxel indices.

    ``rows`` are the outputs; ``support`` (``rows`` among them) the voxels whose input values are
    read; ``boundary`` voxels, present only when the support was cut short, are held at fixed values.
    ``row_ranks``, ``ranks`` and ``boundary_ranks`` are their operator rows; step t updates the
    operator rows ``updates[spans[t, 0]:spans[t, 1]]``. The plan reads the operator's own arrays (no
    copy), so it is valid until they change.
    """

    operator: PoolingOperator
    ranks: np.ndarray
    boundary_ranks: np.ndarray
    row_ranks: np.ndarray
    updates: np.ndarray
    spans: np.ndarray

    @property
    def rows(self) -> np.ndarray:
        return self.operator.order[self.row_ranks]

    @property
    def support(self) -> np.ndarray:
        return self.operator.order[self.ranks]

    @property
    def boundary(self) -> np.ndarray:
        return self.operator.order[self.boundary_ranks]

    def propagate(self, values: np.ndarray, boundary: np.ndarray | None = None) -> np.ndarray:
        """Outputs (len(rows) x C float32) from the inputs at ``support`` (and the held ``boundary`` values)."""
        values = np.asarray(values, dtype=np.float32)
        column = values.ndim == 1
        values = values.reshape(len(self.ranks), -1)
        width = values.shape[1]
        if boundary is None:
            if len(self.boundary_ranks):
                raise PoolingError("this region plan holds boundary voxels: give their values")
            boundary = np.zeros((0, width), dtype=np.float32)
        boundary = np.asarray(boundary, dtype=np.float32).reshape(len(self.boundary_ranks), width)
        inputs = np.concatenate([values, boundary])
        at = np.concatenate([self.ranks, self.boundary_ranks])
        op = self.operator
        out = np.empty((len(self.row_ranks), width), dtype=np.float32)
        for start in range(0, width, _GROUP):
            stop = min(start + _GROUP, width)
            out[:, start:stop] = _propagate_group(
                op.neighbours,
                op.weights,
                self.updates,
                self.spans,
                inputs[:, start:stop],
                at,
                self.row_ranks,
                op.threads,
            )
        return out[:, 0] if column else out


@dataclass
class AffinityInputs:
    """Per-voxel terms of the affinity logits, in the caller's voxel order (arrays with no rows are left out).

    ``positions`` float64; ``unit`` unit student embeddings, ``rgb`` colours in [0, 1] and ``normals``
    unit normals, all float32.
    """

    positions: np.ndarray
    unit: np.ndarray
    rgb: np.ndarray
    normals: np.ndarray
    geometric: bool

    @classmethod
    def of(
        cls,
        positions: np.ndarray,
        embeddings: np.ndarray | None = None,
        colors: np.ndarray | None = None,
        normals: np.ndarray | None = None,
        geometric: bool = False,
        color_scale: float | None = None,
    ) -> AffinityInputs:
        """Validated terms; colours are divided by ``color_scale`` (default: 255 if any exceeds 1, else 1)."""
        positions = np.asarray(positions)
        if positions.ndim != 2 or positions.shape[1] != 3:
            raise PoolingError(f"positions must be N x 3, got shape {positions.shape}")
        if len(positions) == 0:
            raise PoolingError("cannot pool an empty scene (no voxels)")
        if not np.isfinite(positions).all():
            raise PoolingError("positions contain NaN or inf")
        n = len(positions)
        embeddings = _check_per_voxel("embeddings", embeddings, n)
        colors = _check_per_voxel("colors", colors, n, 3) if geometric else None
        normals = _check_per_voxel("normals", normals, n, 3) if geometric else None
        unit = np.zeros((0, 1), dtype=np.float32) if embeddings is None else unit_rows(embeddings)
        rgb = unit_normals = np.zeros((0, 3), dtype=np.float32)
        if colors is not None:
            scale = color_scale if color_scale is not None else (255.0 if colors.max() > 1.0 else 1.0)
            rgb = np.ascontiguousarray((np.asarray(colors, dtype=np.float64) / scale).astype(np.float32))
        if normals is not None:
            unit_normals = unit_rows(normals)
        return cls(np.ascontiguousarray(positions, dtype=np.float64), unit, rgb, unit_normals, geometric)


def unit_rows(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 unit rows of ``values`` (how the affinity normalises embeddings and normals, row by row),
    written to ``out`` (a C-contiguous float32 array of the same shape) when given."""
    values = np.ascontiguousarray(values)
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    out = np.empty(values.shape, dtype=np.float32) if out is None else out
    _unit_rows(values, out)
    return out


def _check_per_voxel(name: str, array: np.ndarray | None, n: int, width: int | None = None) -> np.ndarray | None:
    if array is None:
        return None
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.number):
        raise PoolingError(f"{name} must be numbers, got {array.dtype}")
    if array.ndim != 2 or array.shape[0] != n or (width is not None and array.shape[1] != width):
        expected = f"({n}, {width if width is not None else 'D'})"
        raise PoolingError(f"{name} have shape {array.shape}; expected {expected}")
    if not np.isfinite(array).all():
        raise PoolingError(f"{name} contain NaN or inf")
    return array


class GeometryGuidedPooling:
    """Builds :class:`PoolingOperator` s from student embeddings or from plain geometry.

    The parts are public so that an operator can be patched row by row (incremental purification):
    :meth:`neighbours` finds rows' K nearest voxels, :meth:`row_weights` their softmax weights; a
    row comes out bit-identical however many other rows are computed with it.
    """

    def __init__(self, config: PoolingConfig | None = None) -> None:
        self.config = config or PoolingConfig()

    def width(self, voxels: int) -> int:
        """Neighbours per row on a map of ``voxels`` voxels: K, or all the other voxels of a smaller map."""
        return min(self.config.k, voxels - 1)

    def neighbours(
        self, positions: np.ndarray, order: np.ndarray, rows: np.ndarray | None = None, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sorted rows ``rows`` (default all) of the kNN graph: ids ascending (int32, sorted indices) and
        the K-th neighbour's distance. ``positions``: float64, caller order; ``order``: the sort; ``out``:
        an R x :meth:`width` int32 array that receives the ids (e.g. rows of a buffer with spare room).

        Exact and deterministic: ties go to the lower sorted index (:func:`ovseg3d_core.geometry.knn`).
        """
        ordered = np.ascontiguousarray(positions[order], dtype=np.float64)
        k = self.width(len(ordered))
        subset = {} if rows is None else {"rows": rows}
        count = len(ordered) if rows is None else len(rows)
        ids = np.empty((count, k), dtype=np.int32) if out is None else out
        distances = np.empty((count, k), dtype=np.float32)  # only the largest of each row is kept
        knn(ordered, k, exclude_self=True, sort=False, threads=self.config.threads, out=(distances, ids), **subset)
        with parallel_launch(self.config.threads):
            return ids, _graph_rows(distances, ids)

    def row_weights(
        self,
        inputs: AffinityInputs,
        order: np.ndarray,
        rows: np.ndarray,
        neighbours: np.ndarray,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Softmax weights (R x K float32) of sorted rows ``rows`` over their sorted ``neighbours``, written
        to ``out`` (a C-contiguous R x K float32 array) when given; the distances and logits go through
        the same array, so a million-row operator needs no temporaries of its size."""
        geo = self.config.geometric
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        order = np.ascontiguousarray(order, dtype=np.int64)
        weights = np.empty(neighbours.shape, dtype=np.float32) if out is None else out
        with parallel_launch(self.config.threads):
            _row_distances(rows, neighbours, order, inputs.positions, weights)
            _affinity_logits(
                rows,
                neighbours,
                weights,
                order,
                inputs.unit,
                inputs.rgb,
                inputs.normals,
                np.float32(self.config.scale if inputs.unit.shape[0] else 0.0),
                np.float32(1 / (2 * geo.distance_sigma**2) if inputs.geometric else 0.0),
                np.float32(1 / (2 * geo.color_sigma**2)),
                np.float32(geo.normal_sharpness),
            )
            _softmax_rows(weights)
        return weights

    def build(self, inputs: AffinityInputs, order: np.ndarray | None = None) -> PoolingOperator:
        """The operator over all voxels of ``inputs``; ``order`` defaults to :func:`morton_order` of the positions."""
        n = len(inputs.positions)
        order = morton_order(inputs.positions) if order is None else np.asarray(order, dtype=np.int64)
        if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
            raise PoolingError(f"order must be a permutation of the {n} voxels")
        if n == 1 or self.config.k == 0:
            neighbours, weights = np.arange(n, dtype=np.int32)[:, None], np.ones((n, 1), dtype=np.float32)
        else:
            neighbours, _ = self.neighbours(inputs.positions, order)
            weights = self.row_weights(inputs, order, np.arange(n), neighbours)
        return PoolingOperator(neighbours, weights, order, self.config.iterations, self.config.threads)

    def from_embeddings(
        self, positions: np.ndarray, embeddings: np.ndarray, *, order: np.ndarray | None = None
    ) -> PoolingOperator:
        """GeoPurify affinity: softmax over the K neighbours of ``scale`` x cosine of student embeddings."""
        if embeddings is None:
            raise PoolingError("embeddings are required (from_geometry pools without a student)")
        return self.build(AffinityInputs.of(positions, embeddings), order)

    def from_geometry(
        self,
        positions: np.ndarray,
        colors: np.ndarray | None = None,
        normals: np.ndarray | None = None,
        *,
        order: np.ndarray | None = None,
    ) -> PoolingOperator:
        """Student-free baseline: bilateral weights from distance, colour (0-1 or 0-255) and normals."""
        return self.build(AffinityInputs.of(positions, None, colors, normals, geometric=True), order)

    def from_embeddings_and_geometry(
        self,
        positions: np.ndarray,
        embeddings: np.ndarray,
        colors: np.ndarray | None = None,
        normals: np.ndarray | None = None,
        *,
        order: np.ndarray | None = None,
    ) -> PoolingOperator:
        """Student affinity times the bilateral kernel (their logits add): the student has no notion of
        distance, so on its own it spreads a voxel's weight evenly over the whole K-neighbourhood.

        ``order`` (any permutation, e.g. :func:`voxel_order`) sets the tie-breaking and summation order.
        """
        if embeddings is None:
            raise PoolingError("embeddings are required (from_geometry pools without a student)")
        return self.build(AffinityInputs.of(positions, embeddings, colors, normals, geometric=True), order)
