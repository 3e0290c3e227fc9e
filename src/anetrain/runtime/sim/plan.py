"""Turn a validated MIL function into a :class:`Plan`: input buffers, steps, output arrays."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from anetrain.hardware.chips import ChipProfile
from anetrain.mil.ir import Function, Literal, Operation
from anetrain.runtime.sim.context import PlanContext, Step, literal_array
from anetrain.runtime.sim.ops import PLANNERS
from anetrain.runtime.sim.weights import WeightResolver


@dataclass
class Plan:
    """What a simulated kernel runs: decode inputs into ``inputs``, run ``steps``, encode
    ``outputs`` (arrays or views holding the returned values after the steps)."""

    inputs: list[np.ndarray]
    steps: list[Step]
    outputs: list[np.ndarray]
    weight_bytes: int


def build_plan(
    fn: Function, chip: ChipProfile, weights: WeightResolver, *, flush_subnormals: bool
) -> Plan:
    ctx = PlanContext(chip, flush_subnormals=flush_subnormals)
    inputs = [ctx.alloc(var) for var in fn.inputs]
    for op in fn.operations:
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
    return Plan(inputs, ctx.steps, outputs, weights.total_bytes)


def _with_resolved_blobs(op: Operation, weights: WeightResolver) -> Operation:
    """A copy of ``op`` whose BLOBFILE attribute literals carry their data inline."""
    attributes = {
        key: Literal(lit.type, weights.resolve(op, lit)) if lit.blob is not None else lit
        for key, lit in op.attributes.items()
    }
    return replace(op, attributes=attributes)
