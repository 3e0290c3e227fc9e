"""Data-movement ops. Their values are already representable, so none of them rounds.

reshape, transpose and the slices become zero-cost NumPy views of their input's buffer when
possible (buffers never move, so a view bound at compile time stays valid); concat copies only
the inputs whose producers could not write into its buffer directly.
"""

from __future__ import annotations

import numpy as np

from anetrain.mil.ir import Operation, Var
from anetrain.mil.ops import slice_by_index_bounds
from anetrain.runtime.sim.context import PlanContext, Step, view_reshape


def _bind_view(op: Operation, ctx: PlanContext, view: np.ndarray | None, src: np.ndarray) -> None:
    """Bind the output to ``view``, or to a buffer refreshed by a copy step if None."""
    var = op.outputs[0]
    const = ctx.is_const(op.inputs["x"])
    if view is not None:
        ctx.define(var, view, const=const)
        return
    shape = var.shape
    ctx.emit(op, lambda r: np.copyto(r, src.reshape(shape)), exact=True)


def plan_reshape(op: Operation, ctx: PlanContext) -> None:
    x = ctx.value(op.inputs["x"])
    shape = op.outputs[0].shape
    _bind_view(op, ctx, view_reshape(x, shape), x)


def plan_transpose(op: Operation, ctx: PlanContext) -> None:
    x = ctx.value(op.inputs["x"])
    perm = ctx.args(op).ints("perm") or []
    _bind_view(op, ctx, np.transpose(x, [p % x.ndim for p in perm]), x)


def plan_slice_by_size(op: Operation, ctx: PlanContext) -> None:
    x = ctx.value(op.inputs["x"])
    args = ctx.args(op)
    index = []
    for b, s, dim in zip(args.ints("begin") or [], args.ints("size") or [], x.shape, strict=True):
        b = b + dim if b < 0 else b
        index.append(slice(b, dim if s == -1 else b + s))
    _bind_view(op, ctx, x[tuple(index)], x)


def plan_slice_by_index(op: Operation, ctx: PlanContext) -> None:
    x = ctx.value(op.inputs["x"])
    args = ctx.args(op)
    masks = {
        key: [bool(v) for v in np.atleast_1d(args.value(key))] if args.has(key) else None
        for key in ("begin_mask", "end_mask", "squeeze_mask")
    }
    index, _ = slice_by_index_bounds(
        x.shape, args.ints("begin") or [], args.ints("end") or [], args.ints("stride"), **masks
    )
    # The trailing Ellipsis keeps the result a view even when every axis is squeezed (a plain
    # all-integer index would return a NumPy scalar copied at compile time).
    _bind_view(op, ctx, x[(*index, Ellipsis)], x)


def plan_concat(op: Operation, ctx: PlanContext) -> None:
    args = ctx.args(op)
    arg = op.inputs["values"]
    items = arg if isinstance(arg, tuple) else (arg,)
    values = ctx.values_of(arg)
    axis = args.int("axis") % values[0].ndim
    out_var = op.outputs[0]
    out_shape = out_var.shape
    placed = [isinstance(v, Var) and ctx.in_buffer_of(v, out_var) for v in items]
    if any(placed):  # producers wrote into their slices already: copy only the others
        pieces, offset = [], 0
        for value, done in zip(values, placed, strict=True):
            n = value.shape[axis]
            if not done:
                pieces.append(((*[slice(None)] * axis, slice(offset, offset + n)), value))
            offset += n
        if not pieces and not ctx.is_const(arg):
            ctx.alloc(out_var)
            return

        def bind(r: np.ndarray) -> Step:
            copies = [(r[index], value) for index, value in pieces]

            def copy_rest() -> None:
                for dst, src in copies:
                    np.copyto(dst, src)

            return copy_rest

        ctx.emit_bound(op, bind, exact=True)
        return
    if args.bool("interleave", False):
        # coremltools: out[..., i*n + j, ...] = values[j][..., i, ...]
        n, d = len(values), values[0].shape[axis]
        split = (*out_shape[:axis], d, n, *out_shape[axis + 1 :])

        def interleave(r: np.ndarray) -> None:
            np.stack(values, axis=axis + 1, out=r.reshape(split))

        ctx.emit(op, interleave, exact=True)
    else:
        ctx.emit(op, lambda r: np.concatenate(values, axis=axis, out=r), exact=True)


PLANNERS = {
    "reshape": plan_reshape,
    "transpose": plan_transpose,
    "slice_by_size": plan_slice_by_size,
    "slice_by_index": plan_slice_by_index,
    "concat": plan_concat,
}
