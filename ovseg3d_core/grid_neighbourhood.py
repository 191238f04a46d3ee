"""Chebyshev (box) neighbourhoods on an integer grid: which voxels (or grid cells) a local change can reach.

Used by the map's normal update and by incremental purification, both of which redo only the voxels
within a fixed voxel radius of the ones that changed, and by the grid kNN to keep only the cells a
subset of queries can read.
"""

from __future__ import annotations

import numba
import numpy as np

from ovseg3d_core.jit import parallel_launch

_DENSE_CELLS = 1 << 25  # largest grid chebyshev_neighbourhood dilates (32 MB)


@numba.njit(cache=True)
def _mark_cells(seeds, shift, low, grid):
    for i in range(len(seeds)):
        grid[(seeds[i, 0] >> shift) - low[0], (seeds[i, 1] >> shift) - low[1], (seeds[i, 2] >> shift) - low[2]] = 1


@numba.njit(parallel=True, cache=True)
def _dilate_first_axis(grid, reach, out):
    """``out[i]``: whether ``grid`` marks a cell within ``reach`` of i along the first axis; a forward and a
    backward sweep, each over whole rows of the other axes at a time (contiguous when ``grid`` is C-ordered)."""
    na, nb, nc = grid.shape
    for j in numba.prange(nb):
        last = np.full(nc, -reach - 1, dtype=np.int64)
        for i in range(na):
            for k in range(nc):
                if grid[i, j, k]:
                    last[k] = i
                out[i, j, k] = 1 if i - last[k] <= reach else 0
        following = np.full(nc, na + reach, dtype=np.int64)
        for i in range(na - 1, -1, -1):
            for k in range(nc):
                if grid[i, j, k]:
                    following[k] = i
                if following[k] - i <= reach:
                    out[i, j, k] = 1


def _dilate(grid: np.ndarray, reach: int) -> np.ndarray:
    """Box dilation of a 3D uint8 mask by ``reach`` cells: one linear sweep per axis, each axis brought first
    by a transposed view (scipy's ``maximum_filter1d`` costs several times more on the tens of millions of
    cells of a map's box)."""
    out = np.empty_like(grid)
    with parallel_launch(0):
        _dilate_first_axis(grid, reach, out)
        _dilate_first_axis(out.transpose(1, 0, 2), reach, grid.transpose(1, 0, 2))
        _dilate_first_axis(grid.transpose(2, 0, 1), reach, out.transpose(2, 0, 1))
    return out


@numba.njit(parallel=True, cache=True)
def _in_marked_cells(coords, shift, low, grid, mask):
    """One pass over the voxels in place of numpy's several (an int64 division alone costs more)."""
    nx, ny, nz = grid.shape
    for i in numba.prange(len(coords)):
        x = (coords[i, 0] >> shift) - low[0]
        y = (coords[i, 1] >> shift) - low[1]
        z = (coords[i, 2] >> shift) - low[2]
        mask[i] = 0 <= x < nx and 0 <= y < ny and 0 <= z < nz and grid[x, y, z] != 0


def chebyshev_neighbourhood(coords: np.ndarray, seeds: np.ndarray, radius: int) -> np.ndarray:
    """Mask of the integer voxel ``coords`` (N x 3) within Chebyshev distance ``radius`` of any of ``seeds`` (M x 3).

    A box dilation of the seeds on a dense grid over their bounding box; when that box would hold
    more than ``_DENSE_CELLS`` voxels, the grid is of cubic blocks (a superset: every voxel within
    ``radius`` passes, none beyond ``radius`` plus two blocks).
    """
    coords = np.ascontiguousarray(coords, dtype=np.int64)
    seeds = np.ascontiguousarray(seeds, dtype=np.int64).reshape(-1, 3)
    if len(coords) == 0 or len(seeds) == 0:
        return np.zeros(len(coords), dtype=bool)
    radius = max(int(radius), 0)
    extent = seeds.max(axis=0) - seeds.min(axis=0) + 2 * radius + 1
    shift = 0  # blocks of 2^shift voxels per axis
    while int(np.prod(-(-extent >> shift) + 2)) > _DENSE_CELLS:
        shift += 1
    block = 1 << shift
    reach = -(-radius // block)  # |block(u) - block(v)| <= ceil(radius / block) when |u - v| <= radius
    low = (seeds.min(axis=0) >> shift) - reach
    grid = np.zeros((seeds.max(axis=0) >> shift) - low + reach + 1, dtype=np.uint8)
    _mark_cells(seeds, shift, low, grid)
    grid = _dilate(grid, reach)
    mask = np.empty(len(coords), dtype=bool)
    with parallel_launch(0):
        _in_marked_cells(coords, shift, low, grid, mask)
    return mask
