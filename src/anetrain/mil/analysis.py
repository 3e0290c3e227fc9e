"""FLOP and byte accounting per op, the basis of summaries and the performance model.

Conventions: a multiply-add counts as 2 FLOPs (conv, matmul, attention); elementwise and
activation ops count one FLOP per output element, softmax five (max, sub, exp, sum, div);
data movement (reshape, transpose, slice, concat, cast) counts none.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from anetrain.mil.ir import Function, Literal, Operation, Program
from anetrain.mil.ops import Args, conv_output_shape
from anetrain.mil.types import TensorType

ELEMENTWISE = {
    "add", "sub", "mul", "real_div", "pow", "exp", "log", "sqrt", "rsqrt", "sigmoid", "silu",
    "tanh", "quantize", "dequantize",
}  # fmt: skip
REDUCTIONS = {"reduce_sum", "reduce_mean", "reduce_max"}
DATA_MOVEMENT = {"reshape", "transpose", "slice_by_size", "slice_by_index", "concat", "cast"}


def _arg_type(op: Operation, key: str) -> TensorType:
    arg = op.arg(key)
    assert arg is not None and not isinstance(arg, tuple), f"{op.op_type} lacks {key}"
    return arg.type


def op_flops(op: Operation) -> int:
    out = op.outputs[0].type
    kind = op.op_type
    if kind == "conv":
        w = _arg_type(op, "weight")
        args = dict(op.inputs)
        shape, _ = conv_output_shape(Args(kind, args))
        macs = math.prod(shape) * w.shape[1] * math.prod(w.shape[2:])
        return 2 * macs + (math.prod(shape) if "bias" in op.inputs else 0)
    if kind == "matmul":
        x = _arg_type(op, "x")
        transpose_x = op.arg("transpose_x")
        flag = transpose_x.value if transpose_x is not None else False  # type: ignore[union-attr]
        inner = x.shape[-1] if x.rank < 2 or not bool(flag) else x.shape[-2]
        return 2 * out.numel * inner
    if kind == "scaled_dot_product_attention":
        q, k = _arg_type(op, "query"), _arg_type(op, "key")
        batch = math.prod(out.shape[:-2])
        scores = batch * q.shape[-2] * k.shape[-2]
        return 2 * scores * q.shape[-1] + 2 * scores * out.shape[-1] + 5 * scores
    if kind == "softmax":
        return 5 * out.numel
    if kind in REDUCTIONS:
        return _arg_type(op, "x").numel
    if kind in ELEMENTWISE:
        return out.numel
    return 0


def literal_bytes(lit: Literal) -> int:
    return lit.type.nbytes


@dataclass
class ProgramStats:
    op_counts: Counter[str] = field(default_factory=Counter)
    flops: int = 0
    weight_bytes: int = 0  # BLOBFILE data
    inline_const_bytes: int = 0  # tensor constants written in the text
    input_bytes: int = 0
    output_bytes: int = 0
    flops_by_op: Counter[str] = field(default_factory=Counter)


def function_stats(fn: Function) -> ProgramStats:
    stats = ProgramStats()
    for op in fn.operations:
        stats.op_counts[op.op_type] += 1
        flops = op_flops(op)
        stats.flops += flops
        stats.flops_by_op[op.op_type] += flops
        for lit in op.attributes.values():
            if lit.blob is not None:
                stats.weight_bytes += lit.type.nbytes
            elif not lit.type.is_scalar and op.op_type == "const":
                stats.inline_const_bytes += lit.type.nbytes
    stats.input_bytes = sum(v.type.nbytes for v in fn.inputs)
    stats.output_bytes = sum(v.type.nbytes for v in fn.outputs)
    return stats


def program_stats(program: Program) -> ProgramStats:
    return function_stats(program.main)
