"""Reductions and softmax: accumulate in float32, round the result once."""

from __future__ import annotations

import numpy as np

from anetrain.mil.ir import Operation
from anetrain.runtime.sim.context import PlanContext, Step


def plan_reduce(op: Operation, ctx: PlanContext) -> None:
    args = ctx.args(op)
    x = ctx.value(op.inputs["x"])
    axes_list = args.ints("axes")
    axes = tuple(range(x.ndim)) if axes_list is None else tuple(a % x.ndim for a in axes_list)
    keep = args.bool("keep_dims", False)
    fn = {"reduce_sum": np.sum, "reduce_mean": np.mean, "reduce_max": np.max}[op.op_type]
    if op.op_type == "reduce_mean" and not op.outputs[0].dtype.is_float:
        # integer mean: the exact (float64) mean truncated toward zero, as coremltools stores it
        def int_mean(r: np.ndarray) -> None:
            mean = np.mean(x, axis=axes, keepdims=keep, dtype=np.float64)
            np.copyto(r, np.trunc(mean), casting="unsafe")

        ctx.emit(op, int_mean, exact=True)
        return
    ctx.emit(
        op,
        lambda r: fn(x, axis=axes, keepdims=keep, out=r),
        exact=op.op_type == "reduce_max",
    )


def plan_softmax(op: Operation, ctx: PlanContext) -> None:
    args = ctx.args(op)
    x = ctx.value(op.inputs["x"])
    axis = args.int("axis", -1) % x.ndim
    kept = tuple(1 if i == axis else d for i, d in enumerate(x.shape))
    acc = ctx.scratch("softmax_acc", kept)

    def softmax(r: np.ndarray) -> None:
        np.max(x, axis=axis, keepdims=True, out=acc)
        np.subtract(x, acc, out=r)
        np.exp(r, out=r)
        np.sum(r, axis=axis, keepdims=True, out=acc)
        np.divide(r, acc, out=r)

    fast = ctx.fast_for(op)
    if fast is None:
        ctx.emit(op, softmax)
        return
    # fast path: the same NumPy steps into scratch, then divide and round in one pass
    raw = ctx.scratch("raw", x.shape)

    def bind(r: np.ndarray) -> Step:
        finish = fast.binary("div", raw, acc, r)
        if finish is None:  # a broadcast the kernel does not cover
            return fast.then_round(lambda: softmax(r), r)

        def fast_softmax() -> None:
            np.max(x, axis=axis, keepdims=True, out=acc)
            np.subtract(x, acc, out=raw)
            np.exp(raw, out=raw)
            np.sum(raw, axis=axis, keepdims=True, out=acc)
            finish()

        return fast_softmax

    ctx.emit_bound(op, bind, fused=True)


PLANNERS = {
    "reduce_sum": plan_reduce,
    "reduce_mean": plan_reduce,
    "reduce_max": plan_reduce,
    "softmax": plan_softmax,
}
