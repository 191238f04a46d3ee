"""Compiled kernels: float16 lanes convert exactly like numpy, and the running-mean update equals numpy."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numba
import numpy as np
import pytest

from ovseg3d_core.geometry import GeometryError
from ovseg3d_core.jit import lanes, load_float, parallel_launch, store_float
from ovseg3d_core.scene import SceneConfig, SceneMap


@numba.njit
def _load_all(bits, out):
    for i in range(bits.shape[0]):
        out[i] = load_float(bits[i])


@numba.njit
def _store_all(values, out):
    for i in range(values.shape[0]):
        out[i] = store_float(values[i], out[i])


def test_every_finite_float16_loads_exactly() -> None:
    bits = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    finite = np.isfinite(bits.view(np.float16))
    out = np.empty(len(bits), np.float32)
    _load_all(bits[finite], out[: finite.sum()])
    np.testing.assert_array_equal(out[: finite.sum()], bits[finite].view(np.float16).astype(np.float32))


def test_float32_stores_round_to_nearest_even_like_numpy() -> None:
    rng = np.random.default_rng(0)
    halves = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    halves = halves[np.isfinite(halves)].astype(np.float32)
    # Exact midpoints between neighbouring float16 values: the ties that round-to-even decides.
    ordered = np.sort(halves[halves >= 0])
    midpoints = (ordered[:-1].astype(np.float64) + ordered[1:]) / 2
    values = np.concatenate(
        [
            rng.standard_normal(100_000).astype(np.float32) * 10.0 ** rng.integers(-8, 5, 100_000),
            midpoints.astype(np.float32),
            -midpoints.astype(np.float32),
            np.float32([0.0, -0.0, 65504.0, 65519.0, 1e-8, -1e-8, 5.96e-8]),
        ]
    ).astype(np.float32)
    out = np.empty(len(values), np.uint16)
    _store_all(values, out)
    np.testing.assert_array_equal(out, values.astype(np.float16).view(np.uint16))


def test_lanes_reject_other_dtypes() -> None:
    with pytest.raises(TypeError, match="float16 or float32"):
        lanes(np.zeros(3, np.float64))


def reference_update(mean: np.ndarray, source: np.ndarray, slots, rows, alpha) -> np.ndarray:
    """The running mean in numpy: float32 arithmetic, one rounding to the storage dtype."""
    expected = mean.copy()
    current = mean[slots].astype(np.float32)
    current = current + (source[rows].astype(np.float32) - current) * alpha[:, None]
    expected[slots] = current.astype(mean.dtype)
    return expected


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("source_dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("source_rows", [5, 5000])  # fewer / more source rows than updated voxels
def test_accumulate_features_equals_numpy(dtype: str, source_dtype: str, source_rows: int) -> None:
    rng = np.random.default_rng(1)
    scene = SceneMap(SceneConfig(voxel_size=0.01, feature_dtype=dtype))
    scene.integrate_points(rng.uniform(0, 1, (3000, 3)).astype(np.float32))
    n, dim = len(scene), 67  # a width that is no multiple of the vector length
    first = rng.standard_normal((n, dim)).astype(np.float32)
    scene.accumulate_features(np.arange(n), first, np.arange(n))
    before = scene._channels["feature_mean"][:n].copy()
    slots = rng.choice(n, n // 2, replace=False)
    rows = rng.integers(0, source_rows, len(slots))
    source = rng.standard_normal((source_rows, dim)).astype(source_dtype)
    weights = rng.uniform(0.5, 3.0, len(slots)).astype(np.float32)
    scene.accumulate_features(slots, source, rows, weights)
    alpha = weights / (1.0 + weights)
    # float16 sources are read as they are, anything else as float32.
    read = source if source_dtype == "float16" else source.astype(np.float32)
    expected = reference_update(before, read, slots, rows, alpha.astype(np.float32))
    np.testing.assert_array_equal(scene._channels["feature_mean"][:n], expected)
    np.testing.assert_allclose(scene.feature_weights()[slots], 1.0 + weights)


def test_accumulate_features_rejects_rows_outside_the_source() -> None:
    scene = SceneMap(SceneConfig(voxel_size=0.1))
    scene.integrate_points(np.float32([[0, 0, 0], [1, 1, 1]]))
    with pytest.raises(GeometryError, match="rows out of range"):
        scene.accumulate_features(np.array([0, 1]), np.zeros((2, 4), np.float32), np.array([0, 2]))
    assert scene.feature_weights().sum() == 0


def test_concurrent_launches_from_python_threads_stay_correct() -> None:
    """A node lifts on one thread while another labels; both kernels must finish with correct output."""
    rng = np.random.default_rng(2)
    scenes, expected = [], []
    for _ in range(4):
        scene = SceneMap(SceneConfig(voxel_size=0.01))
        scene.integrate_points(rng.uniform(0, 1, (4000, 3)).astype(np.float32))
        source = rng.standard_normal((len(scene), 32)).astype(np.float32)
        scenes.append((scene, source))
        expected.append(source.astype(np.float16))
    errors: list[BaseException] = []

    def work(scene: SceneMap, source: np.ndarray) -> None:
        try:
            for _ in range(20):
                scene.clear_features()
                scene.accumulate_features(np.arange(len(scene)), source, np.arange(len(scene)))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=pair) for pair in scenes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    for (scene, _), want in zip(scenes, expected, strict=True):
        np.testing.assert_array_equal(scene._channels["feature_mean"][: len(scene)], want)


def test_parallel_launch_sets_and_restores_threads() -> None:
    before = numba.get_num_threads()
    with parallel_launch(1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before


def test_kernels_leave_torch_thread_count_alone() -> None:
    """numba's first OpenMP launch in a process reset torch to numba's thread count (MiniLM got 10x slower)."""
    script = """
import numpy as np, torch
from ovseg3d_core.scene import SceneConfig, SceneMap
torch.set_num_threads(1)
scene = SceneMap(SceneConfig(voxel_size=0.1))
scene.integrate_points(np.random.default_rng(3).uniform(0, 1, (200, 3)).astype(np.float32))
scene.accumulate_features(np.arange(len(scene)), np.ones((len(scene), 8), np.float32), np.arange(len(scene)))
print(torch.get_num_threads())
"""
    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}  # more threads than torch's, as on any multi-core robot
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-1] == "1"
