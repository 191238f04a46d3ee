"""Chebyshev (box) neighbourhoods of voxels: which voxels a local change can reach.

Used by the normal update here and by incremental purification, both of which redo only the
voxels within a fixed voxel radius of the ones that changed.
"""

from __future__ import annotations

import numpy as np

_DENSE_CELLS = 1 << 25  # largest grid chebyshev_neighbourhood dilates (32 MB)


def chebyshev_neighbourhood(coords: np.ndarray, seeds: np.ndarray, radius: int) -> np.ndarray:
    """Mask of the integer voxel ``coords`` (N x 3) within Chebyshev distance ``radius`` of any of ``seeds`` (M x 3).

    A box dilation of the seeds on a dense grid over their bounding box; when that box would hold
    more than ``_DENSE_CELLS`` voxels, the grid is of cubic blocks (a superset: every voxel within
    ``radius`` passes, none beyond ``radius`` plus two blocks).
    """
    from scipy.ndimage import maximum_filter1d  # lazy: heavy, and only the dilation needs it

    coords = np.asarray(coords, dtype=np.int64)
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1, 3)
    if len(coords) == 0 or len(seeds) == 0:
        return np.zeros(len(coords), dtype=bool)
    radius = max(int(radius), 0)
    extent = seeds.max(axis=0) - seeds.min(axis=0) + 2 * radius + 1
    block = 1
    while int(np.prod(-(-extent // block) + 2)) > _DENSE_CELLS:
        block *= 2
    reach = -(-radius // block)  # |block(u) - block(v)| <= ceil(radius / block) when |u - v| <= radius
    low = seeds.min(axis=0) // block - reach
    cells = seeds // block - low
    grid = np.zeros(cells.max(axis=0) + reach + 1, dtype=np.uint8)
    grid[cells[:, 0], cells[:, 1], cells[:, 2]] = 1
    for axis in range(3):
        grid = maximum_filter1d(grid, 2 * reach + 1, axis=axis, mode="constant")
    at = coords // block - low
    inside = np.all((at >= 0) & (at < np.array(grid.shape)), axis=1)
    mask = np.zeros(len(coords), dtype=bool)
    mask[inside] = grid[at[inside, 0], at[inside, 1], at[inside, 2]] > 0
    return mask
