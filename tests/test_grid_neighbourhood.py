"""The box neighbourhood that decides which normals and student embeddings an update recomputes."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg3d_core.grid_neighbourhood import chebyshev_neighbourhood


def chebyshev_distance(coords: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    return np.abs(coords[:, None, :] - seeds[None]).max(axis=2).min(axis=1)


@pytest.mark.parametrize("radius", [0, 1, 3, 7])
def test_equals_brute_force_on_a_dense_grid(radius):
    rng = np.random.default_rng(radius)
    coords = rng.integers(-40, 40, size=(20000, 3))  # negative coordinates too
    seeds = coords[rng.choice(len(coords), 25)]  # on voxels: radius 0 selects them
    mask = chebyshev_neighbourhood(coords, seeds, radius)
    np.testing.assert_array_equal(mask, chebyshev_distance(coords, seeds) <= radius)
    assert 0 < mask.sum() < len(coords)


def test_a_wide_seed_box_uses_blocks_and_stays_a_tight_superset():
    rng = np.random.default_rng(0)
    coords = rng.integers(-400, 400, size=(20000, 3))
    seeds = rng.integers(-400, 400, size=(40, 3))  # a box of 800^3 voxels: above the dense grid's size
    radius = 10
    mask = chebyshev_neighbourhood(coords, seeds, radius)
    distance = chebyshev_distance(coords, seeds)
    assert mask[distance <= radius].all() and (distance <= radius).sum() > 0
    block = 8  # the smallest power of two that brings 800^3 voxels under 2^25 cells
    assert not mask[distance > radius + 2 * block].any()
    assert mask[distance > radius].any()  # blocks: a superset, not the exact set


def test_no_seeds_or_no_voxels():
    coords = np.zeros((5, 3), dtype=np.int64)
    assert not chebyshev_neighbourhood(coords, np.zeros((0, 3)), 3).any()
    assert chebyshev_neighbourhood(np.zeros((0, 3)), coords, 3).shape == (0,)
