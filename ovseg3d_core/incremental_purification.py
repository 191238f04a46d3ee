"""Incremental purification: keep the pooling graph, the student embeddings and the pooled scores of a
map between purifications, and recompute only what a change of the map can reach.

What a purification computes, and what each part depends on:

- the kNN graph (K nearest voxels of each voxel): row i changes if voxel i appeared or moved, if one
  of its neighbours was evicted or moved, or if a voxel that appeared or moved is now closer than its
  K-th neighbour;
- the student embeddings: a sparse CNN, so an embedding depends only on the voxels (their presence,
  colour, normal) within the network's receptive field (:attr:`StudentConfig.receptive_radius`);
- the operator's row i (softmax weights over its K neighbours): its graph row, and the positions,
  colours, normals and embeddings of voxel i and its neighbours;
- the pooled scores A^T x (T = iterations): voxel i's score depends on the rows and inputs within T
  hops of it, so only voxels within T reverse hops of a changed row or input can change
  (:meth:`IncrementalPurifier._reverse_levels`); they are recomputed from the inputs on a support
  that reaches T hops further (:meth:`PoolingOperator.region`), everything else keeps its score.

Everything runs in one map-independent voxel order (:func:`voxel_order`: a Z-order of the voxel keys),
which decides distance ties and the summation order of every row, so a recomputed row is the same
bits as in a full rebuild and an untouched one needs no update. With the defaults (``hops`` and
``student_radius`` 0: exact), the result equals ``purify(force=True)``: bit for bit for the
geometric affinity (tests/test_incremental_purification.py), and for the student modes too as long
as a student sub-forward reproduces the full one (measured: it does, with the receptive field as
context). Smaller ``hops`` / ``student_radius`` trade exactness for time; the test reports how much.

Normals are the map's (:meth:`SceneMap.normals`, itself re-estimated only around changes).

An update writes only what changed, in memory too: the kept per-voxel arrays (inputs, embeddings,
graph rows) live in buffers with spare rows (:class:`_Rows`), so new voxels are appended, voxels
inserted into or evicted from the voxel order move the graph rows in place (:func:`move_rows`), and
only the changed rows are recomputed. Of the map's size, only index arrays (a few bytes per voxel:
the voxel order, hop levels) are rebuilt; no embedding, input or graph array is copied, but into a
larger buffer once its spare rows are used up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ovseg3d_core.config import Config, setting
from ovseg3d_core.geometry import morton_codes, unpack_voxel_keys, voxel_key_fields
from ovseg3d_core.grid_neighbourhood import chebyshev_neighbourhood
from ovseg3d_core.jit import parallel_launch
from ovseg3d_core.labeling import Labeler
from ovseg3d_core.purify.pooling import (
    AffinityInputs,
    GeometryGuidedPooling,
    PoolingConfig,
    PoolingOperator,
    move_rows,
    renumber_neighbours,
    reverse_hop,
    unit_rows,
    voxel_morton_codes,
)
from ovseg3d_core.scene import SceneMap

STUDENT_MODES = ("student", "student_geometric")
GEOMETRIC_MODES = ("geometric", "student_geometric")


@dataclass
class IncrementalConfig(Config):
    """When and how far a purification updates its previous result instead of rebuilding it."""

    enabled: bool = setting(True, "update the previous purification where the map changed (false: always rebuild)")
    max_changed_fraction: float = setting(
        0.3,
        "a change touching more than this share of the voxels rebuilds everything (cheaper than patching)",
        low=0.0,
        high=1.0,
    )
    hops: int = setting(
        0,
        "graph hops around a change whose pooled scores are recomputed; 0 = all propagation steps (exact); "
        "fewer is approximate, and its error adds up over updates until a full rebuild",
        low=0,
        high=1000,
    )
    student_radius: int = setting(
        0,
        "voxels around a changed student input whose embeddings are recomputed; 0 = the receptive field (exact); "
        "fewer is approximate (error adds up over updates until a full rebuild)",
        low=0,
        high=1000,
    )


@dataclass
class PurifyUpdate:
    """What one :meth:`IncrementalPurifier.purify` did."""

    kind: str  # "full", "incremental" or "unchanged"
    timings: dict[str, float]
    changed_voxels: int = 0
    region_voxels: int = 0
    reason: str = ""


_SPARE = 0.25  # spare rows of a kept per-voxel buffer, as a share of its rows


class _Rows:
    """Per-voxel rows: the first ``count`` rows of a buffer with spare room, so that voxels added to the map
    are written after the others instead of copying them all. Spare rows cost no memory until written
    (an array this large is mapped page by page on first touch)."""

    def __init__(self, data: np.ndarray, count: int) -> None:
        self.data, self.count = data, count

    @classmethod
    def empty(cls, count: int, width: int, dtype) -> _Rows:
        return cls(np.empty((count + int(_SPARE * count) + 64, width), dtype=dtype), count)

    @classmethod
    def of(cls, array: np.ndarray) -> _Rows:
        rows = cls.empty(len(array), array.shape[1], array.dtype)
        rows.rows[:] = array
        return rows

    @property
    def rows(self) -> np.ndarray:
        return self.data[: self.count]

    def resize(self, count: int) -> np.ndarray:
        """The first ``count`` rows, the current ones kept (rows past them are the caller's to fill); a
        copy into a larger buffer only when this one is full."""
        if count > len(self.data):
            grown = _Rows.empty(count, self.data.shape[1], self.data.dtype)
            grown.data[: self.count] = self.rows
            self.data = grown.data
        self.count = count
        return self.rows

    def move(self, sources: np.ndarray, targets: np.ndarray, count: int) -> np.ndarray:
        """``count`` rows, rows ``sources`` now at ``targets`` (sources ascending), the others the caller's
        to fill. In place when the targets ascend too (the voxel order, a compacted map)."""
        if len(targets) < 2 or bool(np.all(targets[1:] > targets[:-1])):
            self.resize(max(count, self.count))
            move_rows(self.data, sources, targets)
        else:
            moved = _Rows.empty(count, self.data.shape[1], self.data.dtype)
            moved.data[targets] = self.data[sources]
            self.data = moved.data
        self.count = count
        return self.rows


@dataclass
class _State:
    """Everything kept between purifications; slot arrays follow the map's slots, rank arrays the voxel order."""

    mode: str
    labeler: Labeler
    version: int
    layout: int
    keys: np.ndarray  # slot -> packed key
    colors: np.ndarray  # slot -> uint8 RGB
    normals: np.ndarray  # slot -> the map's normal
    inputs: AffinityInputs  # slot order: views of ``buffers`` (and empty arrays for terms not used)
    buffers: dict[str, _Rows]  # the per-voxel inputs by AffinityInputs field
    codes: np.ndarray  # rank -> Morton code (ascending)
    order: np.ndarray  # rank -> slot
    farthest: np.ndarray  # rank -> distance of the K-th neighbour
    neighbours: _Rows  # rank -> sorted neighbour ranks
    weights: _Rows  # rank -> their weights
    operator: PoolingOperator | None  # views of neighbours and weights

    @property
    def size(self) -> int:
        return len(self.keys)

    def resized(self, count: int) -> AffinityInputs:
        """The per-voxel inputs grown to ``count`` slots, kept slots unchanged (the slots were not renumbered)."""
        for name, rows in self.buffers.items():
            setattr(self.inputs, name, rows.resize(count))
        return self.inputs

    def moved(self, sources: np.ndarray, targets: np.ndarray, count: int) -> AffinityInputs:
        """The per-voxel inputs of old slots ``sources`` moved to slots ``targets`` (renumbered slots)."""
        for name, rows in self.buffers.items():
            setattr(self.inputs, name, rows.move(sources, targets, count))
        return self.inputs


def _differing(now: np.ndarray, before: np.ndarray, kept: np.ndarray | slice, was: np.ndarray | slice) -> np.ndarray:
    """Slots ``kept`` whose row of ``now`` differs from row ``was`` of ``before`` (slices: no copies).

    The few differing entries are found in the flat comparison: a row-wise ``any`` reads it again, slowly.
    """
    unequal = now[kept] != before[was]
    differs = np.unique(np.flatnonzero(unequal) // unequal.shape[1])
    return differs if isinstance(kept, slice) else kept[differs]


class IncrementalPurifier:
    """The purification of one map (graph, embeddings, operator) kept up to date with the map and a labeler.

    ``student`` returns the loaded student network (called only in the student modes).
    """

    def __init__(
        self,
        mode: str,
        pooling: PoolingConfig,
        config: IncrementalConfig | None = None,
        student: Callable[[], object] | None = None,
    ) -> None:
        self.mode = mode
        self.pooling = GeometryGuidedPooling(pooling)
        self.config = config or IncrementalConfig()
        self.student = student
        self._state: _State | None = None

    def invalidate(self) -> None:
        """Forget the kept state: the next purification rebuilds (map replaced or reset, model changed)."""
        self._state = None

    @property
    def operator(self) -> PoolingOperator | None:
        """The operator of the last purification (rows in the voxel order), None before one or in mode none."""
        return None if self._state is None else self._state.operator

    @property
    def embeddings(self) -> np.ndarray | None:
        """The kept unit student embeddings (N x D, slot order) of the last purification; None without a student."""
        if self._state is None or not self._state.inputs.unit.shape[0]:
            return None
        return self._state.inputs.unit

    # ------------------------------------------------------------------ entry
    def purify(self, scene: SceneMap, labeler: Labeler, force: bool = False) -> PurifyUpdate:
        """Bring ``labeler``'s scene up to date with ``scene``: an update where possible, else a full rebuild."""
        if self.mode == "none":
            self._state = None
            start = time.perf_counter()
            labeler.set_scene(scene.stored_features(), None)
            return PurifyUpdate("full", {"labeler_ms": (time.perf_counter() - start) * 1e3}, len(scene))
        reason = self._rebuild_reason(scene, labeler, force)
        if not reason:
            try:
                update = self._update(scene, labeler)
            except Exception:
                self._state = None  # possibly half patched
                raise
            if update is not None:
                return update
            reason = f"more than {self.config.max_changed_fraction:.0%} of the voxels changed"
        self._state = None  # free the kept arrays before the new ones are built
        update = self._rebuild(scene, labeler)
        update.reason = reason
        return update

    def _rebuild_reason(self, scene: SceneMap, labeler: Labeler, force: bool) -> str:
        state = self._state
        if force:
            return "forced"
        if not self.config.enabled:
            return "incremental purification is off"
        if state is None:
            return "no previous purification"
        if state.mode != self.mode or state.labeler is not labeler:
            return "the purification mode or the labeler changed"
        if min(len(scene), state.size) <= self.pooling.config.k:
            return f"a map of at most K={self.pooling.config.k} voxels"
        return ""

    # ------------------------------------------------------------ full build
    def _attributes(self, scene: SceneMap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions (float64), colours and normals of the map: the inputs of the student and the affinity."""
        return scene.positions(copy=False).astype(np.float64), scene.colors(), scene.normals()

    def _inputs(self, positions, colors, normals, unit) -> AffinityInputs:
        geometric = self.mode in GEOMETRIC_MODES
        inputs = AffinityInputs.of(positions, None, colors, normals, geometric=geometric, color_scale=255.0)
        if unit is not None:
            inputs.unit = unit
        return inputs

    def _embed_all(self, scene: SceneMap, keys: np.ndarray, colors, normals) -> _Rows:
        """The unit student embeddings of every voxel, in a buffer with spare rows."""
        from ovseg3d_core.purify.student import embed_voxels, student_input_features  # torch, spconv: lazy

        student = self.student()
        coords = unpack_voxel_keys(keys)
        semantic = scene.features() if student.config.variant == "official" else None
        feats = student_input_features(student.config, coords, colors, normals, semantic)
        embeddings = embed_voxels(student, coords, feats)
        unit = _Rows.empty(len(keys), embeddings.shape[1], np.float32)
        unit_rows(embeddings, out=unit.rows)
        return unit

    def build_operator(self, scene: SceneMap) -> tuple[PoolingOperator | None, dict[str, float], _State | None]:
        """The operator of the whole map from scratch (and the state it leaves), with timings in ms."""
        timings: dict[str, float] = {}
        if self.mode == "none":
            return None, timings, None
        start = time.perf_counter()
        keys = scene.keys
        positions, colors, normals = self._attributes(scene)
        timings["normals_ms"] = (time.perf_counter() - start) * 1e3
        unit = None
        if self.mode in STUDENT_MODES:
            start = time.perf_counter()
            unit = self._embed_all(scene, keys, colors, normals)
            timings["student_ms"] = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        inputs = self._inputs(positions, colors, normals, None if unit is None else unit.rows)
        codes = voxel_morton_codes(keys)
        order = np.argsort(codes, kind="stable")
        n = len(keys)
        config = self.pooling.config
        if n == 1:
            neighbours, weights = _Rows.of(np.zeros((1, 1), dtype=np.int32)), _Rows.of(np.ones((1, 1), np.float32))
            farthest = np.zeros(1)
        else:
            neighbours = _Rows.empty(n, self.pooling.width(n), np.int32)
            _, farthest = self.pooling.neighbours(positions, order, out=neighbours.rows)
            timings["knn_ms"] = (time.perf_counter() - start) * 1e3
            weights = _Rows.empty(n, neighbours.data.shape[1], np.float32)
            self.pooling.row_weights(inputs, order, np.arange(n), neighbours.rows, out=weights.rows)
        operator = PoolingOperator.trusted(neighbours.rows, weights.rows, order, config.iterations, config.threads)
        timings["pooling_ms"] = (time.perf_counter() - start) * 1e3
        per_voxel = [name for name in ("positions", "rgb", "normals") if len(getattr(inputs, name)) == n]
        buffers = {name: _Rows.of(getattr(inputs, name)) for name in per_voxel}  # the terms the mode uses
        if unit is not None:
            buffers["unit"] = unit
        state = _State(
            self.mode, None, scene.version, scene.layout, keys, colors, normals, inputs, buffers, codes[order], order,
            farthest, neighbours, weights, operator,
        )  # fmt: skip
        state.resized(n)  # the inputs as views of the buffers
        return operator, timings, state

    def _rebuild(self, scene: SceneMap, labeler: Labeler) -> PurifyUpdate:
        operator, timings, state = self.build_operator(scene)
        start = time.perf_counter()
        labeler.set_scene(scene.stored_features(), operator)
        timings["labeler_ms"] = (time.perf_counter() - start) * 1e3
        state.labeler = labeler
        self._state = state
        return PurifyUpdate("full", timings, len(scene), len(scene))

    # -------------------------------------------------------------- update
    def _update(self, scene: SceneMap, labeler: Labeler) -> PurifyUpdate | None:
        """Patch the kept state to the map; None when the change is too large to be worth it."""
        st = self._state
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + (now - clock) * 1e3
            clock = now

        n, old_n = len(scene), st.size
        keys = scene.keys
        # Which old voxel each slot holds now (between renumberings, slots keep their voxels).
        same_slots = scene.layout == st.layout and n >= old_n and np.array_equal(keys[:old_n], st.keys)
        slot_of_old = np.arange(old_n) if same_slots else scene.lookup(st.keys)
        kept_old = slot_of_old >= 0
        previous = np.full(n, -1, dtype=np.int64)
        previous[slot_of_old[kept_old]] = np.flatnonzero(kept_old)
        new = np.arange(old_n, n) if same_slots else np.flatnonzero(previous < 0)
        evicted = np.flatnonzero(~kept_old)  # old slots
        positions, colors, normals = scene.positions(copy=False), scene.colors(), scene.normals()
        lap("normals_ms")
        kept, was = (slice(0, old_n),) * 2 if same_slots else (np.flatnonzero(previous >= 0), previous[previous >= 0])
        moved = _differing(positions, st.inputs.positions, kept, was)
        recolored = _differing(colors, st.colors, kept, was)
        renormal = _differing(normals, st.normals, kept, was)
        relifted = scene.feature_changes(st.version)
        changed = np.unique(np.concatenate([new, moved, recolored, renormal, relifted]))
        lap("changes_ms")
        if len(changed) + len(evicted) > self.config.max_changed_fraction * n:
            return None
        if len(changed) == 0 and len(evicted) == 0:
            st.version = scene.version
            return PurifyUpdate("unchanged", timings)

        # The voxel order: kept voxels keep their relative order, new ones are merged in by code.
        reordered = len(new) > 0 or len(evicted) > 0
        if reordered:
            new_codes = voxel_morton_codes(keys[new])
            by_code = np.argsort(new_codes, kind="stable")
            new, new_codes = new[by_code], new_codes[by_code]
            kept_rank = kept_old[st.order]  # per old rank
            kept_codes = st.codes[kept_rank]
            rank_of_kept = np.arange(len(kept_codes)) + np.searchsorted(new_codes, kept_codes)
            rank_of_new = np.searchsorted(kept_codes, new_codes) + np.arange(len(new_codes))
            order = np.empty(n, dtype=np.int64)
            order[rank_of_kept] = slot_of_old[st.order[kept_rank]]
            order[rank_of_new] = new
            codes = np.empty(n, dtype=np.uint64)
            codes[rank_of_kept] = kept_codes
            codes[rank_of_new] = new_codes
        else:
            order, codes = (st.order if same_slots else slot_of_old[st.order]), st.codes
        rank_of_slot = np.empty(n, dtype=np.int64)
        rank_of_slot[order] = np.arange(n)
        lost = np.zeros(n, dtype=bool)
        farthest = st.farthest
        if reordered:
            # Graph rows follow their voxels to the new ranks, in place; ids are renumbered, rows that
            # lost a neighbour flagged, and the rows of new voxels hold valid ids until they are computed.
            st.operator = None  # its arrays are being moved
            sources = np.flatnonzero(kept_rank)
            rank_map = np.full(old_n, -1, dtype=np.int32)
            rank_map[sources] = rank_of_kept
            farthest = np.zeros(n)
            farthest[rank_of_kept] = st.farthest[sources]
            neighbours = st.neighbours.move(sources, rank_of_kept, n)
            weights = st.weights.move(sources, rank_of_kept, n)
            with parallel_launch(self.pooling.config.threads):
                renumber_neighbours(neighbours, rank_of_kept, rank_map, lost)
            neighbours[rank_of_new] = 0
        else:
            neighbours, weights = st.neighbours.rows, st.weights.rows
        lap("remap_ms")

        # Per-voxel inputs in the new slot numbering: kept rows stay (moved with their slots), the rows of
        # new and changed voxels are computed.
        inputs = st.resized(n) if same_slots else st.moved(np.flatnonzero(kept_old), slot_of_old[kept_old], n)
        if len(changed):
            part = self._inputs(positions[changed].astype(np.float64), colors[changed], normals[changed], None)
            for name in st.buffers.keys() - {"unit"}:
                getattr(inputs, name)[changed] = getattr(part, name)
        lap("inputs_ms")

        # Graph rows to recompute.
        blocks = _Blocks(keys, order, codes, rank_of_slot, farthest, scene.voxel_size)
        moved_ranks = rank_of_slot[moved]
        has_moved = self._reverse_levels(neighbours, blocks, moved_ranks, 1) == 1
        entering = self._entering(inputs.positions, order, blocks, np.concatenate([new, moved]))
        dirty = lost | has_moved | entering
        dirty[rank_of_slot[new]] = True
        dirty[moved_ranks] = True
        graph_rows = np.flatnonzero(dirty)
        lap("graph_scan_ms")
        if len(graph_rows):
            ids, far = self.pooling.neighbours(inputs.positions, order, graph_rows)
            neighbours[graph_rows] = ids
            farthest[graph_rows] = far
        blocks.farthest = farthest
        lap("knn_ms")

        # Student embeddings within the receptive field of a changed input.
        touched = np.zeros(n, dtype=bool)  # per slot: an input of the affinity logits changed
        touched[new] = True
        touched[moved] = True
        if self.mode in GEOMETRIC_MODES:
            touched[recolored] = True
            touched[renormal] = True
        if self.mode in STUDENT_MODES:
            student_changed = np.concatenate([new, recolored, renormal])
            embedded = self._embed_region(scene, keys, colors, normals, student_changed, st.keys[evicted], relifted)
            if embedded is None:
                return None
            rows, values = embedded
            unit = inputs.unit
            differs = np.any(values != unit[rows], axis=1)
            unit[rows] = values
            touched[rows[differs]] = True
            lap("student_ms")

        # Operator rows whose inputs changed: the graph rows, the touched voxels and whoever reads them.
        touched_ranks = rank_of_slot[np.flatnonzero(touched)]
        rows_dirty = dirty | (self._reverse_levels(neighbours, blocks, touched_ranks, 1) >= 0)
        operator_rows = np.flatnonzero(rows_dirty)
        if len(operator_rows):
            weights[operator_rows] = self.pooling.row_weights(inputs, order, operator_rows, neighbours[operator_rows])
        config = self.pooling.config
        operator = PoolingOperator.trusted(neighbours, weights, order, config.iterations, config.threads)
        lap("weights_ms")

        # Scores: rows within `hops` reverse hops of a changed row or input.
        seeds = rows_dirty
        seeds[rank_of_slot[relifted]] = True
        hops = config.iterations if self.config.hops == 0 else min(self.config.hops, config.iterations)
        region = np.flatnonzero(self._reverse_levels(neighbours, blocks, np.flatnonzero(seeds), hops) >= 0)
        plan = operator.region(region, hops)
        lap("region_ms")
        labeler.update_scene(scene.stored_features(), operator, plan, previous, relifted)
        lap("labeler_ms")

        st.labeler, st.version, st.layout = labeler, scene.version, scene.layout
        st.keys, st.colors, st.normals = keys, colors, normals
        st.codes, st.order, st.farthest, st.operator = codes, order, farthest, operator
        return PurifyUpdate("incremental", timings, len(changed) + len(evicted), len(plan.row_ranks))

    # ------------------------------------------------------------- helpers
    def _reverse_levels(self, neighbours: np.ndarray, blocks: _Blocks, seeds: np.ndarray, hops: int) -> np.ndarray:
        """Per rank: the fewest hops to a seed following neighbour ids (0 for seeds), -1 beyond ``hops``.

        Each hop reads only the rows around the last one's (:meth:`_Blocks.ranges_around`) and finds
        the next frontier among them: the cost follows the frontier, not the map.
        """
        level = np.full(len(neighbours), -1, dtype=np.int16)
        frontier = np.unique(np.asarray(seeds, dtype=np.int64))
        level[frontier] = 0
        for hop in range(1, hops + 1):
            if not len(frontier):
                break
            starts, stops = blocks.ranges_around(frontier)
            with parallel_launch(self.pooling.config.threads):
                reverse_hop(neighbours, starts, stops, blocks.long_row, blocks.long_rows, level, hop)
            read = np.concatenate([_Blocks.ranks_in(starts, stops), blocks.long_rows])
            frontier = np.unique(read[level[read] == hop])
        return level

    def _entering(self, positions, order, blocks: _Blocks, arrivals: np.ndarray) -> np.ndarray:
        """Per rank: whether a voxel that appeared or moved (slots ``arrivals``) lies within the row's K-th distance."""
        from scipy.spatial import cKDTree  # scipy.spatial: lazy, as in geometry.knn

        n = len(order)
        out = np.zeros(n, dtype=bool)
        if not len(arrivals):
            return out
        points = positions[arrivals]
        starts, stops = blocks.ranges_around(np.sort(blocks.rank_of_slot[arrivals]))
        candidates = _Blocks.ranks_in(starts, stops)
        candidates = np.union1d(candidates[~blocks.long_row[candidates]], blocks.long_rows)
        if not len(candidates):
            return out
        nearest, _ = cKDTree(points).query(positions[order[candidates]], k=1, workers=-1)
        reach = blocks.farthest[candidates] * (1 + 1e-6) + 1e-9  # generous: a tie must be recomputed, not missed
        out[candidates[nearest <= reach]] = True
        return out

    def _embed_region(self, scene, keys, colors, normals, changed, evicted_keys, relifted):
        """(slots, unit embeddings) of the voxels within ``student_radius`` of a changed student input,
        from a sub-forward over them and their context; None when the whole map must be embedded."""
        from ovseg3d_core.purify.student import embed_voxels, student_input_features  # torch, spconv: lazy

        student = self.student()
        cfg = student.config
        if cfg.use_height:
            return None  # heights are relative to the map's lowest voxel: any change may move them all
        if cfg.variant == "official":
            changed = np.concatenate([changed, relifted])
        field = cfg.receptive_radius
        radius = self.config.student_radius or field
        coords = unpack_voxel_keys(keys)
        seeds = np.concatenate([coords[changed], unpack_voxel_keys(evicted_keys)])
        if not len(seeds):
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        rows = np.flatnonzero(chebyshev_neighbourhood(coords, seeds, radius))
        context = np.flatnonzero(chebyshev_neighbourhood(coords, coords[rows], min(radius, field)))
        semantic = None
        if cfg.variant == "official":
            semantic = scene.stored_features()[context].astype(np.float32)
        feats = student_input_features(cfg, coords[context], colors[context], normals[context], semantic)
        embeddings = embed_voxels(student, coords[context], feats)[np.searchsorted(context, rows)]
        return rows, unit_rows(embeddings)


class _Blocks:
    """Cubic blocks of 2^b voxels, each a contiguous run of ranks in the Z-order, for finding a voxel set's
    reverse neighbours without reading every row: a row whose K-th neighbour lies within a block edge
    (a "short" row) can only read voxels in the 27 blocks around its own; the few long rows are
    checked one by one. The edge is the smallest power of two above 99% of the rows' reach."""

    def __init__(self, keys, order, codes, rank_of_slot, farthest, voxel_size) -> None:
        self.keys, self.order, self.codes, self.voxel_size = keys, order, codes, voxel_size
        self.rank_of_slot = rank_of_slot
        reach = self._reach(farthest)
        edge = max(2.0, float(np.percentile(reach, 99)) if len(reach) else 2.0)
        self.bits = int(np.ceil(np.log2(edge)))
        self.farthest = farthest

    @property
    def farthest(self) -> np.ndarray:
        """Per rank: the K-th neighbour's distance; setting it (after rows were recomputed) finds the long rows."""
        return self._farthest

    @farthest.setter
    def farthest(self, farthest: np.ndarray) -> None:
        self._farthest = farthest
        self.long_row = self._reach(farthest) > (1 << self.bits)  # per rank
        self.long_rows = np.flatnonzero(self.long_row)

    def _reach(self, farthest: np.ndarray) -> np.ndarray:
        """Voxels (per axis) a row's neighbours can lie from it: positions may sit anywhere in their voxel."""
        return np.floor(farthest / self.voxel_size) + 2

    @staticmethod
    def ranks_in(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
        """Every rank of the ranges [starts, stops), in their order."""
        lengths = stops - starts
        return np.repeat(starts - np.cumsum(np.r_[0, lengths[:-1]]), lengths) + np.arange(lengths.sum())

    def ranges_around(self, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rank ranges [start, stop) of the blocks within one block of the given (ascending) ranks' blocks."""
        b = self.bits
        ranks = np.asarray(ranks, dtype=np.int64)
        block = self.codes[ranks] >> np.uint64(3 * b)  # ascending: a block is a run of ranks
        first = np.r_[True, block[1:] != block[:-1]] if len(block) else np.zeros(0, dtype=bool)
        cells = voxel_key_fields(self.keys[self.order[ranks[first]]]) >> b
        offsets = np.stack(np.meshgrid(*([np.arange(-1, 2)] * 3), indexing="ij"), axis=-1).reshape(-1, 3)
        around = (cells[:, None, :] + offsets[None]).reshape(-1, 3)
        around = around[(around >= 0).all(axis=1) & (around < (1 << (21 - b))).all(axis=1)]
        low = np.unique(morton_codes(around)) << np.uint64(3 * b)
        high = low + (np.uint64(1) << np.uint64(3 * b))
        starts, stops = np.searchsorted(self.codes, low), np.searchsorted(self.codes, high)
        keep = stops > starts
        return starts[keep].astype(np.int64), stops[keep].astype(np.int64)
