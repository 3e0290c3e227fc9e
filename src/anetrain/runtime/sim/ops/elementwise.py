"""Element-wise ops: binary arithmetic and unary activations, computed in float32.

For add/sub/mul/real_div/sqrt of fp16 values, one float32 operation followed by rounding to fp16
gives the correctly rounded fp16 result (float32 has > 2*11+2 bits, so double rounding is
harmless); transcendental functions are float32-accurate before the final rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from anetrain.mil.ir import Operation
from anetrain.runtime.sim.context import PlanContext, Step

_BINARY: dict[str, np.ufunc] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.divide,
    "pow": np.power,
}

# MIL defaults for the optional epsilon of log and rsqrt (coremltools iOS15 op definitions).
_EPSILON = {"log": 1e-45, "rsqrt": 1e-12}


# binary ops whose float32 result is exact IEEE arithmetic: the fast path fuses their rounding
_FUSED = {"add": "add", "sub": "sub", "mul": "mul", "real_div": "div"}


def plan_binary(op: Operation, ctx: PlanContext) -> None:
    fn = _BINARY[op.op_type]
    x, y = ctx.value(op.inputs["x"]), ctx.value(op.inputs["y"])
    out_dtype = op.outputs[0].dtype
    fast = ctx.fast_for(op)
    if fast is not None and op.op_type in _FUSED:
        kind = _FUSED[op.op_type]

        def bind(r: np.ndarray) -> Step:
            step = fast.binary(kind, x, y, r)
            return step or fast.then_round(lambda: fn(x, y, out=r), r)

        ctx.emit_bound(op, bind, fused=True)
    elif out_dtype.is_float:
        ctx.emit(op, lambda r: fn(x, y, out=r))
    else:  # integer arithmetic wraps like NumPy's fixed-width types
        ctx.emit(op, lambda r: fn(x, y, out=r, casting="unsafe"), exact=True)


def _epsilon(op: Operation, ctx: PlanContext) -> np.float32:
    """The given epsilon, or the default in x's dtype: fp16(1e-45) is 0, so an fp16 log(0)
    is -inf as in coremltools, not log(1e-45) = -103. 0 for the ops without one."""
    if op.op_type not in _EPSILON:
        return np.float32(0)
    eps_arg = op.arg("epsilon")
    if eps_arg is not None:
        return np.float32(ctx.value(eps_arg).reshape(()))
    x_dtype = op.outputs[0].dtype.numpy
    with np.errstate(under="ignore"):
        return np.float32(x_dtype.type(_EPSILON[op.op_type]))


def _unary(op: Operation, ctx: PlanContext) -> Callable[[np.ndarray], None]:
    x = ctx.value(op.inputs["x"])
    kind = op.op_type
    eps = _epsilon(op, ctx)
    if kind == "exp":
        return lambda r: np.exp(x, out=r)
    if kind == "sqrt":
        return lambda r: np.sqrt(x, out=r)
    if kind == "tanh":
        return lambda r: np.tanh(x, out=r)
    if kind == "log":

        def log(r: np.ndarray) -> None:
            np.add(x, eps, out=r)
            np.log(r, out=r)

        return log
    if kind == "rsqrt":

        def rsqrt(r: np.ndarray) -> None:
            np.add(x, eps, out=r)
            np.sqrt(r, out=r)
            np.reciprocal(r, out=r)

        return rsqrt
    if kind == "sigmoid":

        def sigmoid(r: np.ndarray) -> None:
            np.negative(x, out=r)
            np.exp(r, out=r)
            r += 1
            np.reciprocal(r, out=r)

        return sigmoid
    if kind == "silu":

        def silu(r: np.ndarray) -> None:
            np.negative(x, out=r)
            np.exp(r, out=r)
            r += 1
            # silu(-inf) is its limit -0.0, not -inf / inf = NaN: clamp -inf to the lowest float
            np.divide(np.maximum(x, np.finfo(x.dtype).min), r, out=r)

        return silu
    raise KeyError(kind)


def plan_unary(op: Operation, ctx: PlanContext) -> None:
    compute = _unary(op, ctx)
    fast = ctx.fast_for(op)
    if fast is not None and op.op_type in ("sqrt", "rsqrt", "sigmoid", "silu"):
        x = ctx.value(op.inputs["x"])
        eps = _epsilon(op, ctx)

        def bind(r: np.ndarray) -> Step:
            step = fast.unary(op.op_type, x, eps, r)
            return step or fast.then_round(lambda: compute(r), r)

        ctx.emit_bound(op, bind, fused=True)
    else:
        ctx.emit(op, compute)


PLANNERS = {
    **dict.fromkeys(_BINARY, plan_binary),
    **dict.fromkeys(("exp", "log", "sqrt", "rsqrt", "sigmoid", "silu", "tanh"), plan_unary),
}
