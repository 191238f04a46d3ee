"""Numba support for the few fused CPU kernels torch has no single op for.

Numba has no float16 type on the CPU, so float16 arrays enter kernels as their ``uint16`` bit
patterns and :func:`load_float` / :func:`store_float` convert each lane with LLVM's own
``half`` <-> ``float`` casts (one F16C instruction per 8-16 lanes where the CPU has it;
round-to-nearest-even, exactly what numpy's ``astype`` does). The same kernel source then serves
float16 and float32 storage. :class:`Float32Vector` and its helpers keep a short float32 row (4-32
lanes) in one vector register, which numba's loop vectoriser does not do for a running sum.

Parallel kernels are started through :func:`parallel_launch`, which serialises launches from
different Python threads (numba's fallback ``workqueue`` threading layer aborts on concurrent
launches; a ROS node lifts and labels on different threads) and sets the kernel's thread count.
OpenMP is tried before TBB: Open3D bundles a TBB too old for numba, which would only warn and
fall back on every process start.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, overload, register_model

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


class Float32Vector(types.Type):
    """LLVM ``<lanes x float>``: numba's loop vectoriser would keep a row's running sum in memory."""

    def __init__(self, lanes: int) -> None:
        self.lanes = lanes
        super().__init__(name=f"float32x{lanes}")


@register_model(Float32Vector)
class Float32VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type: Float32Vector) -> None:
        super().__init__(dmm, fe_type, ir.VectorType(ir.FloatType(), fe_type.lanes))


def _lanes_at(context, builder, array_type, array, start, lanes: int):
    """Pointer to ``array[start:start + lanes]`` as one vector (unaligned access is allowed)."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [start]), ir.VectorType(ir.FloatType(), lanes).as_pointer())


@intrinsic
def float32_vector(typingctx, values):
    """A tuple of float32 as one vector (its length, part of the tuple's type, sets the kernel's width)."""
    if not isinstance(values, types.UniTuple) or values.dtype != types.float32:
        return None
    vector = Float32Vector(values.count)

    def codegen(context, builder, signature, args):
        out = ir.Constant(ir.VectorType(ir.FloatType(), vector.lanes), ir.Undefined)
        for lane in range(vector.lanes):
            out = builder.insert_element(out, builder.extract_value(args[0], lane), ir.Constant(ir.IntType(32), lane))
        return out

    return vector(values), codegen


@intrinsic
def load_vector(typingctx, array, start, like):
    """``array[start:start + lanes]`` of a float32 array as a vector as wide as ``like``."""
    if not isinstance(array, types.Array) or array.dtype != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.load(_lanes_at(context, builder, signature.args[0], args[0], args[1], like.lanes), align=4)

    return like(array, types.intp, like), codegen


@intrinsic
def multiply_add(typingctx, total, weight, row):
    """``total + weight * row`` as a multiply then an add (no fused multiply-add: same rounding as before)."""

    def codegen(context, builder, signature, args):
        vector = ir.VectorType(ir.FloatType(), signature.args[0].lanes)
        first = builder.insert_element(ir.Constant(vector, ir.Undefined), args[1], ir.Constant(ir.IntType(32), 0))
        splat = builder.shuffle_vector(first, first, ir.Constant(ir.VectorType(ir.IntType(32), vector.count), 0))
        return builder.fadd(args[0], builder.fmul(splat, args[2]))

    return total(total, types.float32, row), codegen


@intrinsic
def store_vector(typingctx, array, start, vector):
    """Write ``vector`` to ``array[start:start + lanes]`` of a float32 array."""
    if not isinstance(array, types.Array) or array.dtype != types.float32:
        return None

    def codegen(context, builder, signature, args):
        builder.store(args[2], _lanes_at(context, builder, signature.args[0], args[0], args[1], vector.lanes), align=4)
        return context.get_dummy_value()

    return types.none(array, types.intp, vector), codegen


def lanes(array: np.ndarray) -> np.ndarray:
    """The view a kernel takes of ``array``: uint16 bits for float16, float32 as is."""
    if array.dtype == np.float16:
        return array.view(np.uint16)
    if array.dtype == np.float32:
        return array
    raise TypeError(f"kernels take float16 or float32 arrays, got {array.dtype}")


@contextmanager
def parallel_launch(threads: int = 0) -> Iterator[None]:
    """Run one parallel kernel at a time, on ``threads`` threads (0 = numba's default).

    numba's OpenMP layer shares the process's OpenMP runtime with torch, and its first launch
    resets torch's thread count to its own; torch's setting is put back afterwards.
    """
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    with _LAUNCH_LOCK:
        previous = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS) if threads > 0 else previous)
        try:
            yield
        finally:
            numba.set_num_threads(previous)
            if torch_threads is not None and torch.get_num_threads() != torch_threads:
                torch.set_num_threads(torch_threads)
