"""SceneMap: the robot's bounded, incrementally built voxel map of the scene.

Each occupied voxel (edge ``voxel_size``, default 2 cm as in GeoPurify) holds running sums of the
observed point positions and colours, the number of observations, the stamp and integration tick
at which it was last seen, the summed direction towards the cameras that saw it (to orient
normals) and, once features are lifted into it, a D-dimensional running-mean feature with its
weight. Further per-voxel arrays ("channels", e.g. the top-k view memory of
:mod:`ovseg3d_core.lifting`) can be attached; they follow the voxels through growth, eviction,
cropping, saving and loading.

Storage layout, chosen for throughput with plain numpy: per-voxel arrays are indexed by *slot*
(append-only, amortised growth) and a separate key-sorted index (``np.searchsorted``) maps packed
voxel keys to slots, so integrating a frame never moves the large feature arrays.

Eviction policy: when an integration leaves more than ``max_voxels`` voxels, the least recently
integrated voxels (oldest integration tick; ties: fewest observations first) are dropped until
``max_voxels * (1 - eviction_headroom)`` remain. The headroom makes the O(N) compaction rare
instead of running on every frame once the cap is reached; the cap always holds after an
``integrate`` call. Ticks (not stamps) decide, so replayed bags with repeated or zero stamps
still evict in arrival order.

Change tracking, for consumers that update derived data in place of recomputing it (incremental
purification): every feature write stamps its voxels with the map version (:meth:`feature_changes`),
and :attr:`layout` counts the renumberings of slots (eviction, reset, load), between which a slot
keeps its voxel and new voxels take the next slots. Normals are updated where the geometry changed
(see :meth:`normals`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numba
import numpy as np

from ovseg3d_core.frame import RGBDFrame
from ovseg3d_core.geometry import GeometryError, backproject_depth, pack_voxel_keys, voxel_coords
from ovseg3d_core.jit import lanes, load_float, parallel_launch, store_float
from ovseg3d_core.scene.config import SceneConfig
from ovseg3d_core.scene.normals import RawNormals, estimate_normals, orient_normals
from ovseg3d_core.scene.ply import write_ply
from ovseg3d_core.scene.storage import SavedScene, SceneFormatError, read_scene, write_scene

_FEATURE_MEAN = "feature_mean"
_FEATURE_WEIGHT = "feature_weight"


@numba.njit(parallel=True, cache=True)
def _running_mean_update(mean, source, slots, rows, alpha):
    """``mean[slots[i]] += alpha[i] * (source[rows[i]] - mean[slots[i]])`` in one pass over each row."""
    for i in numba.prange(slots.shape[0]):
        target = mean[slots[i]]
        row = source[rows[i]]
        weight = alpha[i]
        for j in range(target.shape[0]):
            current = load_float(target[j])
            target[j] = store_float(current + (load_float(row[j]) - current) * weight, target[j])


class SkippedFrameWarning(UserWarning):
    """An input frame or point set carried no usable data and was skipped; the map is unchanged."""


class SceneMap:
    """Voxel-hashed map; all per-voxel accessors return arrays in the same (slot) order."""

    def __init__(self, config: SceneConfig | None = None) -> None:
        self.config = config or SceneConfig()
        self._version = 0
        self._geometry_version = 0
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget everything (voxels, features, channels)."""
        self._n = 0
        self._sorted_keys = np.empty(0, np.int64)
        self._sorted_slots = np.empty(0, np.int64)
        self._arrays: dict[str, np.ndarray] = {
            "keys": np.empty(0, np.int64),
            "pos_sum": np.empty((0, 3), np.float64),
            "rgb_sum": np.empty((0, 3), np.float32),
            "count": np.empty(0, np.float32),
            "last_seen": np.empty(0, np.float64),
            "tick": np.empty(0, np.int64),
            "view_sum": np.empty((0, 3), np.float32),
        }
        self._channels: dict[str, np.ndarray] = {}
        self._channel_fill: dict[str, float] = {}
        self._feature_stamps = np.empty(0, np.int64)  # per slot: map version of the last feature write
        self._tick = 0
        self._version += 1  # versions only grow, so caches keyed on them never alias after a reset
        self._geometry_version += 1
        self._layout = getattr(self, "_layout", 0) + 1
        self._positions_cache: tuple[int, np.ndarray] | None = None
        self._normals_cache: tuple[int, np.ndarray] | None = None
        self._raw_normals: RawNormals | None = None

    def __len__(self) -> int:
        return self._n

    @property
    def voxel_size(self) -> float:
        return self.config.voxel_size

    @property
    def integrations(self) -> int:
        """Depth frames and point clouds integrated since the map was created or reset (saved with it)."""
        return self._tick

    @property
    def version(self) -> int:
        """Increases on every change; lets callers cache derived data."""
        return self._version

    @property
    def layout(self) -> int:
        """Increases whenever slots are renumbered (eviction, reset, load); in between, slot i stays one voxel."""
        return self._layout

    @property
    def keys(self) -> np.ndarray:
        """Packed voxel keys (see :func:`ovseg3d_core.geometry.pack_voxel_keys`)."""
        return self._arrays["keys"][: self._n].copy()

    def positions(self, copy: bool = True) -> np.ndarray:
        """Mean observed position of each voxel (Nx3 float32).

        ``copy=False`` returns the cached read-only array (lifting projects it for every keyframe).
        """
        if self._positions_cache is None or self._positions_cache[0] != self._geometry_version:
            a = self._arrays
            positions = (a["pos_sum"][: self._n] / a["count"][: self._n, None]).astype(np.float32)
            positions.flags.writeable = False
            self._positions_cache = (self._geometry_version, positions)
        return self._positions_cache[1].copy() if copy else self._positions_cache[1]

    def colors(self) -> np.ndarray:
        """Mean observed colour (Nx3 uint8 RGB)."""
        a = self._arrays
        mean = a["rgb_sum"][: self._n] / a["count"][: self._n, None]
        return np.clip(np.rint(mean), 0, 255).astype(np.uint8)

    def counts(self) -> np.ndarray:
        """Number of points integrated into each voxel."""
        return self._arrays["count"][: self._n].astype(np.int64)

    def last_seen(self) -> np.ndarray:
        """Stamp of the last frame that observed each voxel."""
        return self._arrays["last_seen"][: self._n].copy()

    def normals(self) -> np.ndarray:
        """Unit normals (Nx3 float32) by PCA over neighbouring voxels (Open3D), oriented towards
        the cameras that observed each voxel; cached until the map changes.

        After a change only the voxels within the search radius of a voxel that appeared, moved or
        was evicted are re-estimated, by the same Open3D call on a crop of the map holding every
        voxel within the radius of them: a normal is a function of the voxels inside its search
        ball, so the result is the full computation's (bit for bit in every comparison made, e.g.
        tests/test_incremental_purification.py; Open3D orders exactly equidistant neighbours by its
        k-d tree, so a tie could only change a sum's rounding). More than a third of the map to
        redo, or no earlier estimate, runs the one full pass.
        """
        if self._normals_cache is not None and self._normals_cache[0] == self._geometry_version:
            return self._normals_cache[1].copy()
        if self._n < 3:
            normals = np.zeros((self._n, 3), np.float32)
            self._raw_normals = None
        else:
            keys = self._arrays["keys"][: self._n]
            self._raw_normals = estimate_normals(self.positions(copy=False), keys, self._raw_normals, self.config)
            normals = orient_normals(self._raw_normals.normals, self._arrays["view_sum"][: self._n])
        self._normals_cache = (self._geometry_version, normals)
        return normals.copy()

    # -------------------------------------------------------------- features
    @property
    def feature_dim(self) -> int:
        """D of the feature accumulator (0 until the first features are lifted)."""
        mean = self._channels.get(_FEATURE_MEAN)
        return 0 if mean is None else mean.shape[1]

    def features(self) -> np.ndarray:
        """Mean lifted feature of each voxel (N x D float32; zero rows where nothing was lifted)."""
        mean = self._channels.get(_FEATURE_MEAN)
        if mean is None:
            return np.zeros((self._n, self.config.feature_dim), np.float32)
        return mean[: self._n].astype(np.float32)

    def stored_features(self) -> np.ndarray:
        """The N x D features as stored (``feature_dtype``, float16 by default) without a copy.

        A read-only view of the live storage: valid until the map changes (lifting writes it in place).
        """
        mean = self._channels.get(_FEATURE_MEAN)
        if mean is None:
            return self.features()
        view = mean[: self._n]
        view.flags.writeable = False
        return view

    def feature_weights(self) -> np.ndarray:
        """Accumulated weight (number of contributing views) of each voxel's feature."""
        weight = self._channels.get(_FEATURE_WEIGHT)
        return np.zeros(self._n, np.float32) if weight is None else weight[: self._n].copy()

    def feature_changes(self, since: int) -> np.ndarray:
        """Slots whose feature was written after map version ``since`` (ascending)."""
        return np.flatnonzero(self._feature_stamps[: self._n] > since)

    def clear_features(self) -> None:
        """Drop all features and attached channels, keep the geometry (e.g. a new 2D encoder)."""
        self._channels.clear()
        self._channel_fill.clear()
        self._version += 1
        self._feature_stamps[: self._n] = self._version

    def _ensure_features(self, dim: int) -> None:
        expected = self.feature_dim or self.config.feature_dim
        if expected and dim != expected:
            raise GeometryError(f"feature dimension {dim} does not match the map's {expected}")
        if _FEATURE_MEAN not in self._channels:
            self.channel(_FEATURE_MEAN, (dim,), np.dtype(self.config.feature_dtype))
            self.channel(_FEATURE_WEIGHT, (), np.float32)

    def accumulate_features(
        self, slots: np.ndarray, source: np.ndarray, rows: np.ndarray, weights: np.ndarray | float = 1.0
    ) -> None:
        """Running weighted mean: voxel ``slots[i]`` absorbs ``source[rows[i]]`` with ``weights[i]``.

        ``slots`` must be unique. ``source`` (P x D, e.g. a flattened feature map) is read in
        place: one compiled pass reads and rewrites each updated row once (float32 arithmetic,
        one rounding to the storage dtype), so no V x D temporary is built and memory traffic is
        the minimum of one read and one write per row, on ``feature_threads`` threads.
        """
        slots = np.asarray(slots, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.int64)
        source = np.asarray(source)
        if source.ndim != 2 or slots.shape != rows.shape:
            raise GeometryError("accumulate_features expects source P x D and equally long slots and rows")
        if slots.size and (slots.min() < 0 or slots.max() >= self._n):
            raise GeometryError("feature slots out of range of the map")
        if rows.size and (rows.min() < 0 or rows.max() >= len(source)):
            raise GeometryError("feature rows out of range of the source")
        self._ensure_features(source.shape[1])
        weights = np.broadcast_to(np.asarray(weights, dtype=np.float32), slots.shape)
        if not np.all(np.isfinite(weights) & (weights >= 0)):
            raise GeometryError("feature weights must be finite and non-negative")
        storage = self._channels[_FEATURE_MEAN]
        weight = self._channels[_FEATURE_WEIGHT]
        new_weight = weight[slots] + weights
        alpha = np.divide(weights, new_weight, out=np.zeros_like(weights), where=new_weight > 0)
        # The kernel reads float32 (or float16) source rows as they are: numpy's float32 -> float16
        # conversion of a whole 120x160x512 map alone costs ~25 ms, six times the update itself.
        source = np.ascontiguousarray(source, dtype=source.dtype if source.dtype == np.float16 else np.float32)
        with parallel_launch(self.config.feature_threads):
            _running_mean_update(lanes(storage), lanes(source), slots, rows, alpha)
        weight[slots] = new_weight
        self._version += 1
        self._feature_stamps[slots] = self._version

    def set_features(self, slots: np.ndarray, values: np.ndarray, weights: np.ndarray) -> None:
        """Overwrite the fused feature and weight of ``slots`` (fusion modes that are not a running mean)."""
        values = np.asarray(values)
        slots = np.asarray(slots, dtype=np.int64)
        self._ensure_features(values.shape[1])
        self._channels[_FEATURE_MEAN][slots] = values
        self._channels[_FEATURE_WEIGHT][slots] = weights
        self._version += 1
        self._feature_stamps[slots] = self._version

    def channel(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type, fill: float = 0) -> np.ndarray:
        """A named per-voxel array (capacity x ``shape``), created on first use; index it by slot.

        Channels grow, compact, crop, save and load with the voxels, so fusion state (e.g. the
        top-k view memory) stays aligned with the map whatever happens to it.
        """
        existing = self._channels.get(name)
        if existing is not None:
            if existing.shape[1:] != tuple(shape) or existing.dtype != np.dtype(dtype):
                raise GeometryError(
                    f"channel {name!r} holds {existing.dtype}{existing.shape[1:]}, requested {np.dtype(dtype)}{shape}"
                )
            return existing
        array = np.full((self._capacity, *shape), fill, dtype=dtype)
        self._channels[name] = array
        self._channel_fill[name] = fill
        return array

    def has_channel(self, name: str) -> bool:
        return name in self._channels

    # ---------------------------------------------------------- integration
    def integrate(self, frame: RGBDFrame) -> int:
        """Fuse a posed RGB-D frame; returns the number of voxels it touched (0 if skipped).

        The frame was validated when it was built (:class:`RGBDFrame`). Non-finite, non-positive and out-of-range depth
        pixels count as "no measurement"; a frame with fewer than ``min_valid_pixels`` valid pixels
        is skipped with a :class:`SkippedFrameWarning`. In every failure case the map is unchanged.
        """
        depth = frame.depth
        cfg = self.config
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(depth) & (depth >= cfg.depth_min) & (depth <= cfg.depth_max)
        n_valid = int(np.count_nonzero(valid))
        if n_valid < cfg.min_valid_pixels:
            warnings.warn(
                f"frame {frame.name or frame.stamp!r} skipped: {n_valid} valid depth pixels "
                f"(need {cfg.min_valid_pixels}; NaN, inf, <= 0 and out-of-range depth are invalid)",
                SkippedFrameWarning,
                stacklevel=2,
            )
            return 0
        depth = np.where(valid, depth, np.float32(0)).astype(np.float32, copy=False)
        stride = cfg.pixel_stride or self._auto_stride(depth[::8, ::8], frame.intrinsics.fx, frame.intrinsics.fy)
        points, pixels = backproject_depth(depth, frame.intrinsics, frame.pose, stride)
        rgb = frame.color[pixels[:, 0], pixels[:, 1]]
        return self._integrate(points, rgb, frame.stamp, frame.pose[:3, 3])

    def integrate_points(
        self,
        xyz: np.ndarray,
        rgb: np.ndarray | None = None,
        stamp: float = 0.0,
        viewpoint: np.ndarray | None = None,
    ) -> int:
        """Fuse world-frame points (a PointCloud2, mesh vertices); returns voxels touched.

        ``rgb`` is Nx3 uint8 (grey if omitted); ``viewpoint`` (the sensor origin, if known)
        orients normals. Rows with non-finite coordinates are dropped with a warning; an empty
        or all-invalid input is skipped with a :class:`SkippedFrameWarning`.
        """
        xyz = np.asarray(xyz)
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise GeometryError(f"points must be N x 3, got shape {xyz.shape}")
        if rgb is None:
            rgb = np.full((len(xyz), 3), 128, np.uint8)
        rgb = np.asarray(rgb)
        if rgb.shape != xyz.shape:
            raise GeometryError(f"colours {rgb.shape} do not match points {xyz.shape}")
        if rgb.dtype != np.uint8:
            raise GeometryError(f"colours must be uint8 RGB, got {rgb.dtype}")
        if viewpoint is not None:
            viewpoint = np.asarray(viewpoint, dtype=np.float64).reshape(3)
            if not np.all(np.isfinite(viewpoint)):
                raise GeometryError("viewpoint must be finite")
        finite = np.isfinite(xyz).all(axis=1)
        if not finite.all() and finite.any():
            warnings.warn(f"dropped {int((~finite).sum())} non-finite points", SkippedFrameWarning, stacklevel=2)
        if not finite.any():
            warnings.warn(f"{len(xyz)} points skipped: none is finite", SkippedFrameWarning, stacklevel=2)
            return 0
        return self._integrate(xyz[finite].astype(np.float32, copy=False), rgb[finite], stamp, viewpoint)

    def _auto_stride(self, depth_sample: np.ndarray, fx: float, fy: float) -> int:
        """Largest stride that still puts ``samples_per_voxel`` pixels along a voxel edge at the median depth."""
        sample = depth_sample[depth_sample > 0]
        if sample.size == 0:
            return 1
        voxel_px = min(fx, fy) * self.voxel_size / float(np.median(sample))
        return max(1, int(voxel_px / self.config.samples_per_voxel))

    def _integrate(self, points: np.ndarray, rgb: np.ndarray, stamp: float, viewpoint: np.ndarray | None) -> int:
        keys = pack_voxel_keys(voxel_coords(points, self.voxel_size))  # raises before any state change
        unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        m = len(unique)
        pos_sum = np.stack([np.bincount(inverse, points[:, i], minlength=m) for i in range(3)], axis=1)
        rgb_sum = np.stack([np.bincount(inverse, rgb[:, i], minlength=m) for i in range(3)], axis=1)

        slots = self.lookup(unique)
        new = slots < 0
        n_new = int(np.count_nonzero(new))
        if n_new:
            self._reserve(self._n + n_new)
            self._clear_slots(self._n, self._n + n_new)
            slots[new] = np.arange(self._n, self._n + n_new)
            where = np.searchsorted(self._sorted_keys, unique[new])
            self._sorted_keys = np.insert(self._sorted_keys, where, unique[new])
            self._sorted_slots = np.insert(self._sorted_slots, where, slots[new])
            self._arrays["keys"][slots[new]] = unique[new]
            self._n += n_new
        self._tick += 1
        a = self._arrays
        a["pos_sum"][slots] += pos_sum
        a["rgb_sum"][slots] += rgb_sum.astype(np.float32)
        a["count"][slots] += counts.astype(np.float32)
        a["last_seen"][slots] = stamp
        a["tick"][slots] = self._tick
        if viewpoint is not None:
            to_camera = viewpoint - pos_sum / counts[:, None]
            norm = np.linalg.norm(to_camera, axis=1, keepdims=True)
            a["view_sum"][slots] += (to_camera / np.maximum(norm, 1e-9)).astype(np.float32)
        self._version += 1
        self._geometry_version += 1
        if self._n > self.config.max_voxels:
            self._evict()
        return m

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Slot of each packed key, -1 where the voxel is not in the map."""
        keys = np.asarray(keys, dtype=np.int64)
        where = np.searchsorted(self._sorted_keys, keys)
        slots = np.full(len(keys), -1, np.int64)
        inside = where < len(self._sorted_keys)
        hit = inside.copy()
        hit[inside] = self._sorted_keys[where[inside]] == keys[inside]
        slots[hit] = self._sorted_slots[where[hit]]
        return slots

    def slots_of_points(self, xyz: np.ndarray) -> np.ndarray:
        """Slot of the voxel containing each point (-1 if unmapped)."""
        return self.lookup(pack_voxel_keys(voxel_coords(xyz, self.voxel_size)))

    # ------------------------------------------------------------- capacity
    @property
    def _capacity(self) -> int:
        return len(self._arrays["keys"])

    def _reserve(self, needed: int) -> None:
        if needed <= self._capacity:
            return
        capacity = max(needed, int(self._capacity * 1.5) + 1024)
        for store in (self._arrays, self._channels):
            for name, old in store.items():
                grown = np.zeros((capacity, *old.shape[1:]), old.dtype)
                grown[: self._n] = old[: self._n]
                store[name] = grown
        stamps = np.zeros(capacity, np.int64)
        stamps[: self._n] = self._feature_stamps[: self._n]
        self._feature_stamps = stamps

    def _clear_slots(self, start: int, stop: int) -> None:
        """Reset storage rows about to hold new voxels (they may hold evicted voxels' data)."""
        for array in self._arrays.values():
            array[start:stop] = 0
        for name, array in self._channels.items():
            array[start:stop] = self._channel_fill[name]
        self._feature_stamps[start:stop] = self._version

    def _keep(self, keep: np.ndarray) -> None:
        """Compact storage to the slots in ``keep`` (sorted), preserving their relative order."""
        keep = np.sort(np.asarray(keep, dtype=np.int64))
        if self._raw_normals is not None:
            self._raw_normals = self._raw_normals.compacted(keep, self._arrays["keys"])
        remap = np.full(self._capacity, -1, np.int64)
        remap[keep] = np.arange(len(keep))
        for store in (self._arrays, self._channels):
            for name, array in store.items():
                store[name][: len(keep)] = array[keep]
        self._feature_stamps[: len(keep)] = self._feature_stamps[keep]
        kept = remap[self._sorted_slots] >= 0
        self._sorted_keys = self._sorted_keys[kept]
        self._sorted_slots = remap[self._sorted_slots[kept]]
        self._n = len(keep)
        self._version += 1
        self._geometry_version += 1
        self._layout += 1

    def _evict(self) -> None:
        target = max(1, int(self.config.max_voxels * (1.0 - self.config.eviction_headroom)))
        a = self._arrays
        order = np.lexsort((a["count"][: self._n], a["tick"][: self._n]))  # oldest tick first, then fewest points
        self._keep(order[self._n - target :])

    # ------------------------------------------------------------ selection
    def crop(self, min_xyz: np.ndarray, max_xyz: np.ndarray) -> SceneMap:
        """A new map holding the voxels whose mean position lies in the closed box."""
        low, high = np.asarray(min_xyz, np.float64), np.asarray(max_xyz, np.float64)
        if low.shape != (3,) or high.shape != (3,) or np.any(low > high) or not np.all(np.isfinite([low, high])):
            raise GeometryError(f"crop box must be finite with min <= max, got {low} .. {high}")
        positions = self.positions(copy=False)
        inside = np.all((positions >= low) & (positions <= high), axis=1)
        return self.subset(np.flatnonzero(inside))

    def subset(self, slots: np.ndarray) -> SceneMap:
        """A new map with only the given slots (in their current order)."""
        slots = np.sort(np.asarray(slots, dtype=np.int64))
        out = SceneMap(self.config)
        out._load_arrays(
            {name: array[slots] for name, array in self._arrays.items()},
            {name: array[slots] for name, array in self._channels.items()},
            dict(self._channel_fill),
            self._tick,
        )
        return out

    def _load_arrays(
        self, arrays: dict[str, np.ndarray], channels: dict[str, np.ndarray], fills: dict[str, float], tick: int
    ) -> None:
        self.reset()
        self._arrays.update({name: np.ascontiguousarray(array) for name, array in arrays.items()})
        self._channels = {name: np.ascontiguousarray(array) for name, array in channels.items()}
        self._channel_fill = {name: fills.get(name, 0) for name in channels}
        self._n = len(self._arrays["keys"])
        order = np.argsort(self._arrays["keys"], kind="stable")
        self._sorted_keys = self._arrays["keys"][order]
        self._sorted_slots = order.astype(np.int64)
        if len(np.unique(self._sorted_keys)) != self._n:
            raise SceneFormatError("duplicate voxel keys")
        self._feature_stamps = np.full(self._n, self._version + 1, np.int64)
        self._tick = tick
        self._version += 1
        self._geometry_version += 1
        self._layout += 1

    # ------------------------------------------------------------------- I/O
    def to_ply(
        self, path: str | Path, colors: np.ndarray | None = None, fields: dict[str, np.ndarray] | None = None
    ) -> Path:
        """Export positions, colours (default: the observed ones), normals and extra per-voxel ``fields``
        (e.g. ``label``, ``score``) as a binary PLY point cloud (Open3D tensor API)."""
        colors = self.colors() if colors is None else np.asarray(colors)
        return write_ply(path, self.positions(), {"colors": colors, "normals": self.normals(), **(fields or {})})

    def save(self, path: str | Path) -> Path:
        """Save atomically (temporary file + ``os.replace``) as a versioned ``.npz``."""
        arrays = {name: array[: self._n] for name, array in self._arrays.items()}
        channels = {name: array[: self._n] for name, array in self._channels.items()}
        return write_scene(path, SavedScene(self.config, arrays, channels, self._channel_fill, self._tick))

    @classmethod
    def load(cls, path: str | Path, config: SceneConfig | None = None) -> SceneMap:
        """Load a map written by :meth:`save` (any version up to :data:`~ovseg3d_core.scene.storage.FORMAT_VERSION`).

        Without ``config`` the saved one is used; a given config must keep the saved voxel size.
        """
        saved = read_scene(path, config)
        scene = cls(saved.config)
        scene._load_arrays(saved.arrays, saved.channels, saved.fills, saved.tick)
        if len(scene) > scene.config.max_voxels:  # a smaller cap given at load time still holds
            scene._evict()
        return scene
