"""conv and matmul: float32 products accumulated in float32 (BLAS), rounded once at the end.

A 1x1, stride-1, unpadded, ungrouped conv on ``[1, C, H, W]`` is exactly ``W[Co, Ci] @ X[Ci, HW]``
and takes that fast path; other convs gather an im2col matrix per eval (copies of strided views
of a zero-padded input) and run one batched matmul over the groups.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from anetrain.mil.ir import Operation
from anetrain.mil.ops import conv_output_shape
from anetrain.runtime.sim.context import PlanContext, Step


def plan_matmul(op: Operation, ctx: PlanContext) -> None:
    args = ctx.args(op)
    x, y = ctx.value(op.inputs["x"]), ctx.value(op.inputs["y"])
    if args.bool("transpose_x", False) and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if args.bool("transpose_y", False) and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    ctx.emit(op, lambda r: np.matmul(x, y, out=r))


def plan_conv(op: Operation, ctx: PlanContext) -> None:
    args = ctx.args(op)
    x_arg = op.inputs["x"]
    x = ctx.contiguous(ctx.value(x_arg), const=ctx.is_const(x_arg))
    w_arg = op.inputs["weight"]
    w = ctx.contiguous(ctx.value(w_arg), const=ctx.is_const(w_arg))
    bias_arg = op.inputs.get("bias")
    bias = None if bias_arg is None else ctx.value(bias_arg)
    out_shape, padding = conv_output_shape(args)
    groups = args.int("groups", 1)
    n_sp = x.ndim - 2
    strides = args.ints("strides") or [1] * n_sp
    dilations = args.ints("dilations") or [1] * n_sp
    batch, c_in = x.shape[:2]
    c_out = w.shape[0]
    kernel = w.shape[2:]
    out_spatial = math.prod(out_shape[2:])
    bias_b = None if bias is None else bias.reshape(1, c_out, *([1] * n_sp))

    pointwise = (
        all(k == 1 for k in kernel)
        and all(s == 1 for s in strides)
        and all(p == (0, 0) for p in padding)
        and groups == 1
    )
    if pointwise:
        w2 = w.reshape(c_out, c_in)
        shape_in, shape_out = (c_in, out_spatial), (c_out, out_spatial)
        if batch > 1:
            shape_in, shape_out = (batch, *shape_in), (batch, *shape_out)
        xm = x.reshape(shape_in)  # x is contiguous, so these are views (2-D GEMM when N = 1)

        def conv1x1(r: np.ndarray) -> Step:
            rm = r.reshape(shape_out)

            def step() -> None:
                np.matmul(w2, xm, out=rm)
                if bias_b is not None:
                    np.add(r, bias_b, out=r)

            return step

        ctx.emit_bound(op, conv1x1)
        return

    cig, cog = c_in // groups, c_out // groups
    padded_shape = (
        batch,
        c_in,
        *(d + lo + hi for d, (lo, hi) in zip(x.shape[2:], padding, strict=True)),
    )
    xp = np.zeros(padded_shape, np.float32)  # private: its zero border must survive
    interior = (
        slice(None),
        slice(None),
        *(slice(lo, lo + d) for d, (lo, _) in zip(x.shape[2:], padding, strict=True)),
    )
    k_total = math.prod(kernel)
    col = ctx.scratch("conv_col", (batch, groups, cig, k_total, *out_shape[2:]))
    wg = w.reshape(groups, cog, cig * k_total)
    offsets = list(itertools.product(*(range(k) for k in kernel)))
    patches = []
    for idx, offset in enumerate(offsets):
        sl = tuple(
            slice(o * dil, o * dil + (n - 1) * st + 1, st)
            for o, dil, st, n in zip(offset, dilations, strides, out_shape[2:], strict=True)
        )
        src = xp[(slice(None), slice(None), *sl)].reshape(batch, groups, cig, *out_shape[2:])
        patches.append((idx, src))

    def conv_general(r: np.ndarray) -> None:
        xp[interior] = x
        for idx, src in patches:
            col[:, :, :, idx] = src
        cols = col.reshape(batch, groups, cig * k_total, out_spatial)
        np.matmul(wg, cols, out=r.reshape(batch, groups, cog, out_spatial))
        if bias_b is not None:
            r += bias_b

    ctx.emit(op, conv_general)


PLANNERS = {"matmul": plan_matmul, "conv": plan_conv}
