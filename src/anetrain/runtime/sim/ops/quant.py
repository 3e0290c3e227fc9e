"""cast and the int8 ops: quantize, dequantize, constexpr_affine_dequantize.

quantize is ``saturate(round_half_even(x / scale) + zero_point)`` to int8/uint8, in that order
as in coremltools' definition and value inference (rounding after adding an odd zero point would
flip ties); the dequantize forms are ``(q - zero_point) * scale``. Per-channel parameters
broadcast along ``axis``.
"""

from __future__ import annotations

import numpy as np

from anetrain.mil.ir import Operation
from anetrain.runtime.sim.context import PlanContext, storage_dtype


def _along(param: np.ndarray, axis: int | None, ndim: int) -> np.ndarray:
    """Reshape a scalar or 1-D per-channel parameter to broadcast along ``axis``."""
    p = np.asarray(param)
    if p.ndim == 0 or p.size == 1 or axis is None:
        return p.reshape(()) if p.size == 1 else p
    shape = [1] * ndim
    shape[axis % ndim] = p.size
    return p.reshape(shape)


def _param(op: Operation, ctx: PlanContext, key: str, axis: int | None, ndim: int) -> np.ndarray:
    arg = op.arg(key)
    if arg is None:
        return np.float32(0)
    assert not isinstance(arg, tuple)
    return _along(ctx.value(arg), axis, ndim).astype(np.float32)


def _axis(op: Operation, ctx: PlanContext) -> int | None:
    args = ctx.args(op)
    return args.int("axis") if args.has("axis") else None


def plan_dequantize(op: Operation, ctx: PlanContext) -> None:
    key = "quantized_data" if op.op_type == "constexpr_affine_dequantize" else "input"
    data_arg = op.arg(key)
    assert data_arg is not None and not isinstance(data_arg, tuple)
    data = ctx.value(data_arg)
    axis = _axis(op, ctx)
    scale = _param(op, ctx, "scale", axis, data.ndim)
    zp = _param(op, ctx, "zero_point", axis, data.ndim)

    def dequantize(r: np.ndarray) -> None:
        np.subtract(data, zp, out=r, casting="unsafe")
        r *= scale

    ctx.emit(op, dequantize)


_RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


def plan_quantize(op: Operation, ctx: PlanContext) -> None:
    x = ctx.value(op.inputs["input"])
    axis = _axis(op, ctx)
    scale = _param(op, ctx, "scale", axis, x.ndim)
    zp = _param(op, ctx, "zero_point", axis, x.ndim)
    out_dtype = storage_dtype(op.outputs[0].dtype)
    lo, hi = _RANGES[out_dtype]
    tmp = ctx.scratch("quant", x.shape)

    def quantize(r: np.ndarray) -> None:
        np.divide(x, scale, out=tmp)
        np.rint(tmp, out=tmp)  # round half to even, before the zero point (coremltools)
        np.add(tmp, zp, out=tmp)
        np.clip(tmp, lo, hi, out=tmp)
        np.copyto(r, tmp, casting="unsafe")

    ctx.emit(op, quantize)


def plan_cast(op: Operation, ctx: PlanContext) -> None:
    x = ctx.value(op.inputs["x"])
    out = op.outputs[0].dtype
    if out.is_float:
        ctx.emit(op, lambda r: np.copyto(r, x, casting="unsafe"))
        return
    if out.numpy == np.bool_:
        ctx.emit(op, lambda r: np.not_equal(x, 0, out=r))
        return
    info = np.iinfo(out.numpy)

    def to_int(r: np.ndarray) -> None:  # truncate toward zero and saturate, NaN -> 0
        t = np.nan_to_num(np.trunc(x), nan=0.0) if x.dtype.kind == "f" else x
        np.copyto(r, np.clip(t, info.min, info.max), casting="unsafe")

    ctx.emit(op, to_int)


PLANNERS = {
    "cast": plan_cast,
    "quantize": plan_quantize,
    "dequantize": plan_dequantize,
    "constexpr_affine_dequantize": plan_dequantize,
}
