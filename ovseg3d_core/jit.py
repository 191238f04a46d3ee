"""Numba support for the few fused CPU kernels torch has no single op for.

Numba has no float16 type on the CPU, so float16 arrays enter kernels as their ``uint16`` bit
patterns and :func:`load_float` / :func:`store_float` convert each lane with LLVM's own
``half`` <-> ``float`` casts (one F16C instruction per 8-16 lanes where the CPU has it;
round-to-nearest-even, exactly what numpy's ``astype`` does). The same kernel source then serves
float16 and float32 storage.

Parallel kernels are started through :func:`parallel_launch`, which serialises launches from
different Python threads (numba's fallback ``workqueue`` threading layer aborts on concurrent
launches; a ROS node lifts and labels on different threads) and sets the kernel's thread count.
OpenMP is tried before TBB: Open3D bundles a TBB too old for numba, which would only warn and
fall back on every process start.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

_LAUNCH_LOCK = threading.Lock()
numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]


@intrinsic
def _half_bits_to_float(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@intrinsic
def _float_to_half_bits(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(types.float32), codegen


def load_float(value):
    """One lane of a float16-bits (uint16) or float32 array as float32 (kernel use only)."""
    raise NotImplementedError("call from numba-compiled code")


def store_float(value, like):
    """``value`` (float32) encoded for an array whose lanes look like ``like`` (kernel use only)."""
    raise NotImplementedError("call from numba-compiled code")


@overload(load_float, inline="always")
def _load_float(value):
    if value == types.uint16:
        return lambda value: _half_bits_to_float(value)
    return lambda value: np.float32(value)


@overload(store_float, inline="always")
def _store_float(value, like):
    if like == types.uint16:
        return lambda value, like: _float_to_half_bits(np.float32(value))
    return lambda value, like: np.float32(value)


def lanes(array: np.ndarray) -> np.ndarray:
    """The view a kernel takes of ``array``: uint16 bits for float16, float32 as is."""
    if array.dtype == np.float16:
        return array.view(np.uint16)
    if array.dtype == np.float32:
        return array
    raise TypeError(f"kernels take float16 or float32 arrays, got {array.dtype}")


@contextmanager
def parallel_launch(threads: int = 0) -> Iterator[None]:
    """Run one parallel kernel at a time, on ``threads`` threads (0 = numba's default)."""
    with _LAUNCH_LOCK:
        previous = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS) if threads > 0 else previous)
        try:
            yield
        finally:
            numba.set_num_threads(previous)
