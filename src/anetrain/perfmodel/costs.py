"""Per-op work of a MIL program: FLOPs and the bytes each op moves, by where they live.

Bytes are split three ways, because the performance model gives each its own bandwidth:
- ``weight_bytes``: constant tensors an op reads (BLOBFILE or inline), at their stored width
  (an int8 blob behind ``constexpr_affine_dequantize`` counts 1 byte per element);
- ``io_bytes``: program inputs read and program outputs written (the IOSurfaces, in DRAM);
- ``act_bytes``: intermediate tensors read and written (kept on chip).

``const`` and ``constexpr_*`` ops are compile-time and cost nothing themselves; their bytes are
charged to the ops that read them. ``quantize``/``dequantize`` pairs between int8 layers are taken
as fused into the neighbouring convs (the point of W8A8 is that they cost nothing), so they are
dropped too. FLOPs follow :func:`anetrain.mil.analysis.op_flops`.
"""

from __future__ import annotations

from dataclasses import dataclass

from anetrain.mil.analysis import op_flops
from anetrain.mil.ir import Function, Operation, Program
from anetrain.mil.types import DType

_INT8 = (DType.INT8, DType.UINT8)
MATMUL_LIKE = {"conv", "matmul", "linear"}
FUSED = {"quantize", "dequantize"}


@dataclass(frozen=True)
class OpCost:
    """The work of one runtime op."""

    name: str
    op_type: str
    flops: int
    weight_bytes: int = 0
    act_bytes: int = 0
    io_bytes: int = 0
    int8: bool = False  # multiplies int8-quantized weights (runs at the INT8 rate)


@dataclass(frozen=True)
class ProgramCost:
    """All runtime ops of a program plus its footprint (each constant counted once)."""

    ops: tuple[OpCost, ...]
    weight_bytes: int
    input_bytes: int
    output_bytes: int

    @property
    def flops(self) -> int:
        return sum(op.flops for op in self.ops)


@dataclass(frozen=True)
class _Const:
    nbytes: int
    int8: bool


def _const_info(op: Operation) -> _Const:
    """Stored bytes of a const/constexpr op's tensor data; scalars and strings are free."""
    nbytes, int8 = 0, False
    for key, lit in op.attributes.items():
        if key == "name" or lit.type.is_scalar:
            continue
        nbytes += lit.type.nbytes
        int8 = int8 or lit.type.dtype in _INT8
    return _Const(nbytes, int8)


def function_cost(fn: Function) -> ProgramCost:
    consts: dict[str, _Const] = {}
    inputs = {v.name for v in fn.inputs}
    outputs = {v.name for v in fn.outputs}
    ops: list[OpCost] = []
    for op in fn.operations:
        if op.op_type == "const" or op.op_type.startswith("constexpr_"):
            consts[op.outputs[0].name] = _const_info(op)
            continue
        if op.op_type in FUSED:
            continue
        weight = act = io = 0
        int8 = False
        for var in op.input_vars():
            if var.name in consts:
                info = consts[var.name]
                weight += info.nbytes
                int8 = int8 or (info.int8 and op.op_type in MATMUL_LIKE)
            elif var.name in inputs:
                io += var.type.nbytes
            else:
                act += var.type.nbytes
        for var in op.outputs:
            if var.name in outputs:
                io += var.type.nbytes
            else:
                act += var.type.nbytes
        ops.append(OpCost(op.name, op.op_type, op_flops(op), weight, act, io, int8))
    return ProgramCost(
        ops=tuple(ops),
        weight_bytes=sum(c.nbytes for c in consts.values()),
        input_bytes=sum(v.type.nbytes for v in fn.inputs),
        output_bytes=sum(v.type.nbytes for v in fn.outputs),
    )


def program_cost(program: Program) -> ProgramCost:
    """The cost of the program's main function."""
    return function_cost(program.main)
