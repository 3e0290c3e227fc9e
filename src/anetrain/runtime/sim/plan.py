"""Turn a validated MIL function into a :class:`Plan`: input buffers, steps, output arrays."""

from __future__ import annotations

from collections import Counter
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace

import numpy as np

from anetrain.hardware.chips import ChipProfile
from anetrain.mil.ir import Function, Literal, Operation, Var
from anetrain.runtime.sim.buffers import Arena, BufferPool, Workspace
from anetrain.runtime.sim.context import PlanContext, Step, literal_array
from anetrain.runtime.sim.fast import FastOps
from anetrain.runtime.sim.ops import PLANNERS
from anetrain.runtime.sim.weights import WeightResolver


@dataclass
class Plan:
    """What a simulated kernel runs: decode inputs into ``inputs``, run ``steps``, encode
    ``outputs`` (arrays or views holding the returned values after the steps).
    ``owned_outputs[i]``: output ``i`` is a C-contiguous buffer that only the steps write, all
    of it in every eval, so a surface may hold it directly (no copy out). ``transient``: the
    buffers whose contents are dead between evals (inputs, intermediate values, scratch),
    which may be given back meanwhile and, with a workspace, lie in memory that other plans
    use too."""

    inputs: list[np.ndarray]
    steps: list[Step]
    outputs: list[np.ndarray]
    weight_bytes: int
    owned_outputs: list[bool] = field(default_factory=list)
    fast: FastOps | None = None  # the fast path's kernels, when the plan uses them
    transient: list[np.ndarray] = field(default_factory=list)
    lock: AbstractContextManager | None = None  # its workspace's, held around every eval


def build_plan(
    fn: Function,
    chip: ChipProfile,
    weights: WeightResolver,
    *,
    flush_subnormals: bool,
    fast: bool = False,
    reuse_buffers: bool = True,
    workspace: Workspace | None = None,
) -> Plan:
    """``fast``: the numba kernels (:mod:`anetrain.runtime.sim.fast`); ``reuse_buffers``: dead
    values' buffers serve later outputs; ``workspace``: the transient buffers lie in memory
    shared with its other plans (:mod:`anetrain.runtime.sim.buffers`; the caller holds its
    lock while building, and the kernel while evaluating). None changes a bit of the results."""
    fast_ops = FastOps(flush_subnormals) if fast else None
    arena = Arena(workspace)
    ctx = PlanContext(chip, flush_subnormals=flush_subnormals, fast=fast_ops, arena=arena)
    _alias_concat_inputs(fn, ctx)
    pool = ctx.pool = BufferPool(fn, ctx.slots(), arena) if reuse_buffers else None
    inputs = [ctx.bind_input(var) for var in fn.inputs]  # transient: copied in every eval
    for index, op in enumerate(fn.operations):
        if pool is not None:
            pool.now = index
        if op.op_type == "const":
            lit = op.attributes["val"]
            data = weights.resolve(op, lit) if lit.blob is not None else literal_array(lit)
            if isinstance(data, str):
                ctx.define(op.outputs[0], np.asarray(data, dtype=object), const=True)
            else:
                ctx.define(op.outputs[0], data, const=True)
            continue
        if any(lit.blob is not None for lit in op.attributes.values()):
            op = _with_resolved_blobs(op, weights)  # e.g. constexpr quantized_data
        PLANNERS[op.op_type](op, ctx)
    outputs = [ctx.values[var.name] for var in fn.outputs]
    names = [var.name for var in fn.outputs]
    owned = [
        name in ctx.owned
        and name not in ctx.prefilled
        and out.flags.c_contiguous
        and names.count(name) == 1
        and not _overlaps_another(i, outputs)
        for i, (name, out) in enumerate(zip(names, outputs, strict=True))
    ]
    lock = workspace.lock if workspace is not None else None
    transient = arena.buffers
    return Plan(inputs, ctx.steps, outputs, weights.total_bytes, owned, fast_ops, transient, lock)


def _overlaps_another(i: int, outputs: list[np.ndarray]) -> bool:
    """Whether output ``i`` shares memory with another output (one computed into its slice of
    a returned concat): a surface holding either buffer would see the other's writes, and
    restoring one held surface around a request with other output surfaces would overwrite
    the other's fresh values, so both are copied out instead."""
    return any(j != i and np.may_share_memory(outputs[i], o) for j, o in enumerate(outputs))


def _alias_concat_inputs(fn: Function, ctx: PlanContext) -> None:
    """Let each op output that one concat along a leading axis consumes (once) be computed in
    its slice of the concat's buffer, directly or through reshapes: the producer writes there
    and the concat copies nothing (see ``plan_concat``). Leading axis: every output dim before
    it is 1, so slices are C-contiguous."""
    produced = {op.outputs[0].name for op in fn.operations if op.op_type != "const" and op.outputs}
    concats = [op for op in fn.operations if op.op_type == "concat"]
    in_concats = Counter(
        v.name for op in concats for v in _items(op.inputs["values"]) if isinstance(v, Var)
    )
    for op in concats:
        args = ctx.args(op)
        out = op.outputs[0]
        if args.bool("interleave", False):
            continue
        axis = args.int("axis") % len(out.shape)
        if any(d != 1 for d in out.shape[:axis]):
            continue
        offset = 0
        for v in _items(op.inputs["values"]):
            n = v.type.shape[axis]
            if isinstance(v, Var) and v.name in produced and in_concats[v.name] == 1:
                ctx.alias_into(v, out, (*[slice(None)] * axis, slice(offset, offset + n)))
            offset += n
    # a reshape is a view of its (contiguous) input: let the input's producer write the slot
    for op in reversed(fn.operations):
        if op.op_type != "reshape":
            continue
        slot, x = ctx.slot_of(op.outputs[0]), op.inputs["x"]
        if (
            slot is not None
            and isinstance(x, Var)
            and x.name in produced
            and not ctx.has_slot(x)
            and in_concats[x.name] == 0
        ):
            ctx.alias_into(x, *slot)


def _items(arg: object) -> tuple:
    return arg if isinstance(arg, tuple) else (arg,)


def _with_resolved_blobs(op: Operation, weights: WeightResolver) -> Operation:
    """A copy of ``op`` whose BLOBFILE attribute literals carry their data inline."""
    attributes = {
        key: Literal(lit.type, weights.resolve(op, lit)) if lit.blob is not None else lit
        for key, lit in op.attributes.items()
    }
    return replace(op, attributes=attributes)
