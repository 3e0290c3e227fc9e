"""The op registry: every MIL op we build, print, parse and execute, with type inference.

Each :class:`OpSpec` lists its parameters in call order (what ``b.matmul(x, y)`` binds
positionally), the order the original generators print them in, which parameters must be
compile-time constants, the defaults the builder materializes as ``const`` statements, and a
function inferring the output type that raises :class:`MILTypeError` on bad arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from anetrain.errors import MILTypeError
from anetrain.mil.ir import Arg, Literal, Var
from anetrain.mil.types import BOOL, FP16, FP32, INT8, INT32, STRING, UINT8, DType, TensorType

FLOAT_DTYPES = (FP16, FP32)
QUANT_DTYPES = (INT8, UINT8)


@dataclass(frozen=True)
class Param:
    name: str
    required: bool = True
    const: bool = False
    variadic: bool = False
    # (dtype, python value) the builder materializes, or a function of the bound arguments
    default: tuple[DType, Any] | Callable[[Mapping[str, Any]], tuple[DType, Any]] | None = None


@dataclass(frozen=True)
class OpSpec:
    name: str
    params: tuple[Param, ...]
    infer: Callable[[Args], TensorType]
    min_opset: str = "ios15"
    attributes_only: bool = False  # constexpr ops pass everything in the [...] block
    print_order: tuple[str, ...] | None = None

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def ordered(self, names: list[str]) -> list[str]:
        order = self.print_order or tuple(p.name for p in self.params)
        return [n for n in order if n in names] + [n for n in names if n not in order]


class Args:
    """Read-only view of an operation's arguments for type inference."""

    def __init__(self, op_type: str, args: Mapping[str, Arg], opset: str = "ios18") -> None:
        self.op_type = op_type
        self._args = args
        self.opset = opset

    @property
    def before_ios17(self) -> bool:
        """iOS15/16 opsets accept fewer dtypes (no int8/uint8 tensors outside constexpr ops)."""
        return self.opset in ("ios15", "ios16")

    def has(self, name: str) -> bool:
        return name in self._args

    def get(self, name: str) -> Arg:
        return self._args[name]

    def type(self, name: str) -> TensorType:
        value = self._args[name]
        if isinstance(value, tuple):
            raise self.error(f"parameter '{name}' must be a single value, not a tuple")
        return value.type

    def types(self, name: str) -> list[TensorType]:
        value = self._args[name]
        items = value if isinstance(value, tuple) else (value,)
        return [item.type for item in items]

    def value(self, name: str, default: Any = None) -> Any:
        if name not in self._args:
            return default
        value = self._args[name]
        if isinstance(value, tuple):
            raise self.error(f"parameter '{name}' must be a single value, not a tuple")
        data = value.value
        if data is None:
            raise self.error(f"parameter '{name}' must be a compile-time constant")
        return data

    def ints(self, name: str, default: Any = None) -> list[int] | None:
        data = self.value(name, default)
        if data is None:
            return None
        return [int(v) for v in np.atleast_1d(np.asarray(data))]

    def int(self, name: str, default: int | None = None) -> int:
        data = self.value(name, default)
        if data is None:
            raise self.error(f"missing parameter '{name}'")
        arr = np.asarray(data)
        if arr.size != 1:
            raise self.error(f"parameter '{name}' must be a scalar, got shape {arr.shape}")
        return int(arr.reshape(()))

    def bool(self, name: str, default: bool = False) -> bool:
        return bool(np.asarray(self.value(name, default)).reshape(()))

    def string(self, name: str, default: str | None = None) -> str:
        data = self.value(name, default)
        if not isinstance(data, str):
            raise self.error(f"parameter '{name}' must be a string")
        return data

    def error(self, message: str) -> MILTypeError:
        return MILTypeError(f"{self.op_type}: {message}")


# --------------------------------------------------------------------------------------------
# shape helpers


def broadcast_shapes(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da != db and 1 not in (da, db):
            return None
        out.append(db if da == 1 else da)
    return tuple(reversed(out))


def _axis(args: Args, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise args.error(f"axis {axis} out of range for rank {rank}")
    return axis % rank


def _require_dtype(args: Args, name: str, allowed: tuple[DType, ...]) -> DType:
    dtype = args.type(name).dtype
    if dtype not in allowed:
        names = "/".join(str(d) for d in allowed)
        raise args.error(f"'{name}' has dtype {dtype}, expected {names}")
    return dtype


# --------------------------------------------------------------------------------------------
# inference functions


def _infer_const(args: Args) -> TensorType:
    return args.type("val")


CAST_TARGETS = {
    "fp16": FP16,
    "fp32": FP32,
    "int32": INT32,
    "int8": INT8,
    "uint8": UINT8,
    "bool": BOOL,
}


def _infer_cast(args: Args) -> TensorType:
    target = args.string("dtype")
    allowed = [k for k, v in CAST_TARGETS.items() if not args.before_ios17 or v in BASIC_DTYPES]
    if target not in allowed:
        raise args.error(
            f"cannot cast to {target!r} in opset {args.opset}; supported: {', '.join(allowed)}"
        )
    _basic_input(args)
    return args.type("x").with_dtype(CAST_TARGETS[target])


def _basic_input(args: Args) -> None:
    if args.before_ios17:
        _require_dtype(args, "x", BASIC_DTYPES)


ARITH_DTYPES = (FP16, FP32, INT32)
BASIC_DTYPES = (FP16, FP32, INT32, BOOL)  # what iOS15/16 data movement and cast accept


def _infer_elementwise(args: Args) -> TensorType:
    x, y = args.type("x"), args.type("y")
    _require_dtype(args, "x", ARITH_DTYPES)
    if x.dtype != y.dtype:
        raise args.error(f"operand dtypes differ: x is {x.dtype}, y is {y.dtype}")
    shape = broadcast_shapes(x.shape, y.shape)
    if shape is None:
        raise args.error(f"shapes {list(x.shape)} and {list(y.shape)} do not broadcast")
    return TensorType(x.dtype, shape)


def _infer_float_elementwise(args: Args) -> TensorType:
    _require_dtype(args, "x", FLOAT_DTYPES)
    return _infer_elementwise(args)


def _infer_unary_float(args: Args) -> TensorType:
    _require_dtype(args, "x", FLOAT_DTYPES)
    return args.type("x")


def _infer_log_rsqrt(args: Args) -> TensorType:
    """``epsilon`` is a scalar (``const T`` in the op documentation) of x's dtype in
    iOS15/16; from iOS17 it may be either float dtype (coremltools' iOS17 ``log``/``rsqrt``)."""
    x = args.type("x")
    _require_dtype(args, "x", FLOAT_DTYPES)
    if args.has("epsilon"):
        eps = args.type("epsilon")
        if eps.rank:
            raise args.error(f"epsilon must be a scalar, got {eps}")
        allowed = (x.dtype,) if args.before_ios17 else FLOAT_DTYPES
        if eps.dtype not in allowed:
            raise args.error(
                f"epsilon has dtype {eps.dtype}, but opset {args.opset} needs the dtype of x "
                f"({x.dtype})"
            )
    return x


def _infer_softmax(args: Args) -> TensorType:
    x = args.type("x")
    _require_dtype(args, "x", FLOAT_DTYPES)
    _axis(args, args.int("axis", -1), x.rank)
    return x


def _infer_reduce(args: Args) -> TensorType:
    x = args.type("x")
    _require_dtype(args, "x", ARITH_DTYPES)
    axes = args.ints("axes")
    keep = args.bool("keep_dims", False)
    axes_set = set(range(x.rank)) if axes is None else {_axis(args, a, x.rank) for a in axes}
    if axes is not None and len(axes_set) != len(axes):
        raise args.error(f"repeated axis in {axes}")
    shape = (
        [1 if i in axes_set else d for i, d in enumerate(x.shape)]
        if keep
        else [d for i, d in enumerate(x.shape) if i not in axes_set]
    )
    return TensorType(x.dtype, tuple(shape))


def _reshape_zeros(args: Args, x: TensorType, shape: list[int]) -> list[int]:
    """A 0 in reshape's shape copies a dimension of x, by coremltools' rules per opset:
    iOS15/16 the same axis (len(shape) must equal x's rank); iOS17+ right-aligned with x's
    shape, and 1 where x has no such axis."""
    if args.before_ios17:
        if len(shape) != x.rank:
            raise args.error(
                f"a 0 in shape {shape} copies the same axis of x in opset {args.opset}, which "
                f"needs len(shape) == rank {x.rank}; write the sizes"
            )
        return [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    offset = x.rank - len(shape)
    return [
        (x.shape[i + offset] if i + offset >= 0 else 1) if d == 0 else d
        for i, d in enumerate(shape)
    ]


def _infer_reshape(args: Args) -> TensorType:
    x = args.type("x")
    target = args.ints("shape")
    assert target is not None
    _basic_input(args)
    shape = _reshape_zeros(args, x, list(target)) if 0 in target else list(target)
    if shape.count(-1) > 1:
        raise args.error(f"at most one -1 allowed in shape {target}")
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        if known == 0 or x.numel % known:
            raise args.error(f"cannot infer -1 in {target} from {x.numel} elements")
        shape[shape.index(-1)] = x.numel // known
    if any(d < 0 for d in shape):
        raise args.error(f"invalid dimension in shape {target}")
    if math.prod(shape) != x.numel:
        raise args.error(
            f"cannot reshape {list(x.shape)} ({x.numel} elements) to {shape} "
            f"({math.prod(shape)} elements)"
        )
    return TensorType(x.dtype, tuple(shape))


def _infer_transpose(args: Args) -> TensorType:
    x = args.type("x")
    perm = args.ints("perm")
    assert perm is not None
    _basic_input(args)
    if any(not -x.rank <= p < x.rank for p in perm) or sorted(p % x.rank for p in perm) != list(
        range(x.rank)
    ):
        raise args.error(f"perm {perm} is not a permutation of rank {x.rank}")
    return TensorType(x.dtype, tuple(x.shape[p] for p in perm))


def _infer_slice_by_size(args: Args) -> TensorType:
    x = args.type("x")
    begin, size = args.ints("begin"), args.ints("size")
    assert begin is not None and size is not None
    if len(begin) != x.rank or len(size) != x.rank:
        raise args.error(f"begin {begin} and size {size} must have rank {x.rank}")
    _basic_input(args)
    shape = []
    for axis, (b, s, dim) in enumerate(zip(begin, size, x.shape, strict=True)):
        if b < 0 and s == -1:
            raise args.error(
                f"negative begin {b} with size -1 on axis {axis} is ambiguous across "
                "compilers; give a non-negative begin or an explicit size"
            )
        b = b + dim if b < 0 else b
        s = dim - b if s == -1 else s
        if s == 0:
            raise args.error(f"size 0 on axis {axis} selects nothing (no zero-size tensors)")
        if b < 0 or s < 0 or b + s > dim:
            raise args.error(f"slice [{b}, {b + s}) on axis {axis} is out of bounds for size {dim}")
        shape.append(s)
    return TensorType(x.dtype, tuple(shape))


def slice_by_index_bounds(
    shape: tuple[int, ...],
    begin: list[int],
    end: list[int],
    stride: list[int] | None,
    begin_mask: list[bool] | None,
    end_mask: list[bool] | None,
    squeeze_mask: list[bool] | None,
) -> tuple[list[slice | int], tuple[int, ...]]:
    """Python index and result shape of ``slice_by_index``; shared by inference and execution."""
    rank = len(shape)
    stride = stride or [1] * rank
    begin_mask = begin_mask or [False] * rank
    end_mask = end_mask or [False] * rank
    squeeze_mask = squeeze_mask or [False] * rank
    index: list[slice | int] = []
    out_shape: list[int] = []
    for i, dim in enumerate(shape):
        if squeeze_mask[i]:
            # begin_mask wins over begin here too: the squeezed index is then 0 (coremltools)
            start = 0 if begin_mask[i] else begin[i]
            idx = start + dim if start < 0 else start
            if not 0 <= idx < dim:
                raise ValueError(f"squeezed index {start} out of bounds for size {dim}")
            index.append(idx)
            continue
        if stride[i] == 0:
            raise ValueError("stride must be non-zero")
        sl = slice(None if begin_mask[i] else begin[i], None if end_mask[i] else end[i], stride[i])
        size = len(range(*sl.indices(dim)))
        if size == 0:
            # No zero-size tensors: the ANE has none, and coremltools' type inference gives
            # another shape than its value inference for many empty slices.
            raise ValueError(
                f"slice {begin[i]}:{end[i]}:{stride[i]} selects nothing on axis {i} (size {dim})"
            )
        index.append(sl)
        out_shape.append(size)
    return index, tuple(out_shape)


def _infer_slice_by_index(args: Args) -> TensorType:
    x = args.type("x")
    _basic_input(args)
    lists = {key: args.ints(key) for key in ("begin", "end", "stride")}
    masks = {
        key: [bool(v) for v in np.atleast_1d(args.value(key))] if args.has(key) else None
        for key in ("begin_mask", "end_mask", "squeeze_mask")
    }
    for key, value in {**lists, **masks}.items():
        if value is not None and len(value) != x.rank:
            raise args.error(f"'{key}' has {len(value)} entries, expected rank {x.rank}")
    try:
        _, shape = slice_by_index_bounds(
            x.shape, lists["begin"] or [], lists["end"] or [], lists["stride"], **masks
        )
    except ValueError as err:
        raise args.error(str(err)) from None
    return TensorType(x.dtype, shape)


def _infer_concat(args: Args) -> TensorType:
    types = args.types("values")
    first = types[0]
    axis = _axis(args, args.int("axis"), first.rank)
    interleave = args.bool("interleave", False)
    for t in types[1:]:
        if t.dtype != first.dtype or t.rank != first.rank:
            raise args.error(f"cannot concat {first} with {t}")
        for i, (a, b) in enumerate(zip(first.shape, t.shape, strict=True)):
            if i != axis and a != b:
                raise args.error(f"cannot concat {first} with {t} along axis {axis}")
        if interleave and t.shape != first.shape:
            raise args.error("interleave requires all values to have the same shape")
    shape = list(first.shape)
    shape[axis] = sum(t.shape[axis] for t in types)
    return TensorType(first.dtype, tuple(shape))


def _infer_matmul(args: Args) -> TensorType:
    x, y = args.type("x"), args.type("y")
    out_dtype = x.dtype
    if x.dtype != y.dtype:
        # iOS17+ (coremltools): allowed when exactly one operand is a const, whose dtype then
        # gives way to the other's
        x_const, y_const = _is_const(args.get("x")), _is_const(args.get("y"))
        if args.before_ios17 or x_const == y_const:
            raise args.error(
                f"operand dtypes differ: x is {x.dtype}, y is {y.dtype} (from iOS17 allowed "
                "when exactly one of them is a const)"
            )
        out_dtype = x.dtype if y_const else y.dtype
    if x.rank < 2 or y.rank < 2:
        raise args.error(
            f"operands must have rank >= 2 (got {x.rank} and {y.rank}); reshape vectors to "
            "[1, n] or [n, 1]"
        )
    xs, ys = list(x.shape), list(y.shape)
    if args.bool("transpose_x", False) and x.rank >= 2:
        xs[-1], xs[-2] = xs[-2], xs[-1]
    if args.bool("transpose_y", False) and y.rank >= 2:
        ys[-1], ys[-2] = ys[-2], ys[-1]
    x_vec, y_vec = len(xs) == 1, len(ys) == 1
    xs = [1, *xs] if x_vec else xs
    ys = [*ys, 1] if y_vec else ys
    if xs[-1] != ys[-2]:
        raise args.error(
            f"inner dimensions differ: x is {list(x.shape)}, y is {list(y.shape)} "
            f"(after transposes: {xs[-1]} vs {ys[-2]})"
        )
    batch = broadcast_shapes(tuple(xs[:-2]), tuple(ys[:-2]))
    if batch is None:
        raise args.error(f"batch dims of {list(x.shape)} and {list(y.shape)} do not broadcast")
    out = [*batch, xs[-2], ys[-1]]
    if x_vec:
        out.pop(-2)
    if y_vec:
        out.pop(-1)
    return TensorType(out_dtype, tuple(out))


def conv_output_shape(args: Args) -> tuple[tuple[int, ...], list[tuple[int, int]]]:
    """Output shape and (before, after) padding per spatial axis."""
    x, w = args.type("x"), args.type("weight")
    n_spatial = x.rank - 2
    if n_spatial < 1 or w.rank != x.rank:
        raise args.error(f"x {list(x.shape)} and weight {list(w.shape)} ranks do not match")
    groups = args.int("groups", 1)
    if groups < 1 or x.shape[1] % groups or w.shape[0] % groups:
        raise args.error(
            f"groups={groups} must divide input channels {x.shape[1]} and "
            f"output channels {w.shape[0]}"
        )
    if w.shape[1] * groups != x.shape[1]:
        raise args.error(
            f"weight {list(w.shape)} expects {w.shape[1] * groups} input channels "
            f"(groups={groups}), x has {x.shape[1]}"
        )
    strides = args.ints("strides") or [1] * n_spatial
    dilations = args.ints("dilations") or [1] * n_spatial
    if len(strides) != n_spatial or len(dilations) != n_spatial:
        raise args.error(f"strides/dilations must have {n_spatial} entries")
    if min(strides) < 1 or min(dilations) < 1:
        raise args.error(f"strides {strides} and dilations {dilations} must be >= 1")
    pad_type = args.string("pad_type", "valid")
    pads = args.ints("pad") or [0] * (2 * n_spatial)
    spatial, padding = [], []
    for i in range(n_spatial):
        size, k = x.shape[2 + i], w.shape[2 + i]
        eff = dilations[i] * (k - 1) + 1
        if pad_type == "valid":
            lo = hi = 0
        elif pad_type == "custom":
            if len(pads) != 2 * n_spatial:
                raise args.error(f"custom pad needs {2 * n_spatial} entries, got {pads}")
            lo, hi = pads[2 * i], pads[2 * i + 1]
            if lo < 0 or hi < 0:
                raise args.error(f"custom pad {pads} must be >= 0")
        elif pad_type in ("same", "same_lower"):
            out = -(-size // strides[i])
            total = max((out - 1) * strides[i] + eff - size, 0)
            lo, hi = (total // 2, total - total // 2)
            if pad_type == "same_lower":
                lo, hi = hi, lo
        else:
            raise args.error(f"unknown pad_type {pad_type!r}")
        out = (size + lo + hi - eff) // strides[i] + 1
        if out < 1:
            raise args.error(f"kernel {k} does not fit spatial size {size}")
        spatial.append(out)
        padding.append((lo, hi))
    return (x.shape[0], w.shape[0], *spatial), padding


def _infer_conv(args: Args) -> TensorType:
    x, w = args.type("x"), args.type("weight")
    _require_dtype(args, "x", FLOAT_DTYPES)
    _require_dtype(args, "weight", FLOAT_DTYPES)
    if w.dtype != x.dtype and args.before_ios17:  # iOS17+ conv: weight/bias may differ
        raise args.error(
            f"weight dtype {w.dtype} differs from x dtype {x.dtype} (allowed from iOS17)"
        )
    shape, _ = conv_output_shape(args)
    dilations = args.ints("dilations") or []
    if any(d > 1 for d in dilations) and not _from_constants(args.get("weight")):
        raise args.error(
            f"dilations {dilations} need constant weights; Core ML has no dilated conv with "
            "run-time weights (coremltools rejects it)"
        )
    if args.has("bias"):
        bias = args.type("bias")
        if bias.shape != (w.shape[0],) or bias.dtype != w.dtype:
            raise args.error(f"bias must be {TensorType(w.dtype, (w.shape[0],))}, got {bias}")
        if args.before_ios17 and args.get("bias").value is None:
            raise args.error(f"bias must be a constant in opset {args.opset}")
    return TensorType(x.dtype, shape)


def _infer_sdpa(args: Args) -> TensorType:
    q, k, v = args.type("query"), args.type("key"), args.type("value")
    for name in ("query", "key", "value"):
        _require_dtype(args, name, FLOAT_DTYPES)
    if not q.dtype == k.dtype == v.dtype:
        raise args.error("query, key and value must share a dtype")
    if min(q.rank, k.rank, v.rank) < 3:
        raise args.error("query, key and value must have rank >= 3")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise args.error(
            f"incompatible shapes query {list(q.shape)}, key {list(k.shape)}, value {list(v.shape)}"
        )
    if not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
        raise args.error(
            f"query {list(q.shape)}, key {list(k.shape)} and value {list(v.shape)} must share "
            "rank and batch dimensions"
        )
    batch = q.shape[:-2]
    if args.has("attn_mask"):
        _require_dtype(args, "attn_mask", (BOOL, FP16, FP32))
        mask = args.type("attn_mask")
        scores = (*batch, q.shape[-2], k.shape[-2])
        if mask.shape[-1:] != (k.shape[-2],) or broadcast_shapes(mask.shape, scores) != scores:
            raise args.error(f"attn_mask {list(mask.shape)} does not fit the scores {list(scores)}")
    return TensorType(q.dtype, (*batch, q.shape[-2], v.shape[-1]))


def _check_quant_params(args: Args, data: TensorType) -> None:
    """coremltools' rules: a scalar scale takes no axis; a vector scale needs an axis and one
    entry per channel on it; zero_point has the shape of scale."""
    scale = args.type("scale")
    if scale.rank > 1:
        raise args.error("scale must be a scalar or a 1-D tensor")
    if scale.rank == 0 and args.has("axis"):
        raise args.error("'axis' must be absent when scale is a scalar")
    if scale.rank == 1:
        if not args.has("axis"):
            raise args.error("a per-channel (1-D) scale needs 'axis'")
        axis = _axis(args, args.int("axis"), data.rank)
        if scale.shape[0] != data.shape[axis]:
            raise args.error(
                f"scale has {scale.shape[0]} entries, axis {axis} has {data.shape[axis]}"
            )
    if args.has("zero_point") and args.type("zero_point").shape != scale.shape:
        raise args.error("zero_point must have the shape of scale")


def _infer_constexpr_affine_dequantize(args: Args) -> TensorType:
    data = args.type("quantized_data")
    _require_dtype(args, "quantized_data", QUANT_DTYPES)
    scale_dtype = _require_dtype(args, "scale", FLOAT_DTYPES)
    # coremltools' ZeroPointT: int8, uint8 or fp32, independent of quantized_data's dtype
    _require_dtype(args, "zero_point", (*QUANT_DTYPES, FP32))
    axis = _axis(args, args.int("axis"), data.rank)
    for key in ("scale", "zero_point"):
        t = args.type(key)
        if t.rank > 1 or (t.rank == 1 and t.shape[0] != data.shape[axis]):
            raise args.error(
                f"'{key}' must be a scalar or have {data.shape[axis]} entries (axis {axis}), "
                f"got {list(t.shape)}"
            )
    return data.with_dtype(scale_dtype)


QUANT_OUTPUTS = {"int8": INT8, "uint8": UINT8}


def _infer_quantize(args: Args) -> TensorType:
    data = args.type("input")
    _require_dtype(args, "input", FLOAT_DTYPES)
    if args.type("scale").dtype != data.dtype:
        raise args.error("scale must have the dtype of input")
    out = args.string("output_dtype")
    if out not in QUANT_OUTPUTS:
        raise args.error(f"output_dtype must be int8 or uint8, got {out!r}")
    scale_value = args.get("scale").value
    if scale_value is not None and not np.all(np.asarray(scale_value, dtype=np.float64)):
        raise args.error("scale must be non-zero")
    _check_quant_params(args, data)
    if args.has("zero_point") and args.type("zero_point").dtype != QUANT_OUTPUTS[out]:
        raise args.error("zero_point must have the output dtype")
    return data.with_dtype(QUANT_OUTPUTS[out])


def _infer_dequantize(args: Args) -> TensorType:
    data = args.type("input")
    _require_dtype(args, "input", QUANT_DTYPES)
    scale_dtype = _require_dtype(args, "scale", FLOAT_DTYPES)
    _check_quant_params(args, data)
    if args.has("zero_point") and args.type("zero_point").dtype != data.dtype:
        raise args.error("zero_point must have the dtype of input")
    return data.with_dtype(scale_dtype)


# --------------------------------------------------------------------------------------------
# the registry

REGISTRY: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"op {spec.name} registered twice")
    REGISTRY[spec.name] = spec
    return spec


def get_spec(op_type: str) -> OpSpec:
    try:
        return REGISTRY[op_type]
    except KeyError:
        raise MILTypeError(f"unknown op '{op_type}'") from None


def _n_spatial(bound: Mapping[str, Any]) -> int:
    """Spatial rank of a conv's ``x`` (2 when unknown), to size its default attributes."""
    x = bound.get("x")
    rank = len(getattr(x, "shape", ())) or 4
    return max(rank - 2, 1)


_x = Param("x")
_y = Param("y")
_false = (BOOL, False)

register(OpSpec("const", (Param("val", const=True),), _infer_const, attributes_only=True))
register(OpSpec("cast", (_x, Param("dtype", const=True)), _infer_cast, print_order=("dtype", "x")))
for _name in ("add", "sub", "mul"):
    register(OpSpec(_name, (_x, _y), _infer_elementwise))
for _name in ("real_div", "pow"):
    register(OpSpec(_name, (_x, _y), _infer_float_elementwise))
for _name in ("exp", "sqrt", "sigmoid", "silu", "tanh"):
    register(OpSpec(_name, (_x,), _infer_unary_float))
for _name in ("log", "rsqrt"):
    register(OpSpec(_name, (_x, Param("epsilon", required=False, const=True)), _infer_log_rsqrt))
register(
    OpSpec(
        "softmax",
        (_x, Param("axis", const=True, default=(INT32, -1))),
        _infer_softmax,
        print_order=("axis", "x"),
    )
)
for _name in ("reduce_sum", "reduce_mean", "reduce_max"):
    register(
        OpSpec(
            _name,
            (
                _x,
                Param("axes", required=False, const=True),
                Param("keep_dims", const=True, default=_false),
            ),
            _infer_reduce,
        )
    )
register(
    OpSpec("reshape", (_x, Param("shape", const=True)), _infer_reshape, print_order=("shape", "x"))
)
register(
    OpSpec(
        "transpose", (_x, Param("perm", const=True)), _infer_transpose, print_order=("perm", "x")
    )
)
register(
    OpSpec(
        "slice_by_size",
        (_x, Param("begin", const=True), Param("size", const=True)),
        _infer_slice_by_size,
    )
)
register(
    OpSpec(
        "slice_by_index",
        (
            _x,
            Param("begin", const=True),
            Param("end", const=True),
            Param("stride", required=False, const=True),
            Param("begin_mask", required=False, const=True),
            Param("end_mask", required=False, const=True),
            Param("squeeze_mask", required=False, const=True),
        ),
        _infer_slice_by_index,
    )
)
register(
    OpSpec(
        "concat",
        (
            Param("values", variadic=True),
            Param("axis", const=True),
            Param("interleave", const=True, default=_false),
        ),
        _infer_concat,
        print_order=("axis", "interleave", "values"),
    )
)
register(
    OpSpec(
        "matmul",
        (
            _x,
            _y,
            Param("transpose_x", const=True, default=_false),
            Param("transpose_y", const=True, default=_false),
        ),
        _infer_matmul,
        print_order=("transpose_x", "transpose_y", "x", "y"),
    )
)
register(
    OpSpec(
        "conv",
        (
            _x,
            Param("weight"),
            Param("bias", required=False),
            Param("strides", const=True, default=lambda a: (INT32, [1] * _n_spatial(a))),
            Param("pad_type", const=True, default=(STRING, "valid")),
            Param("pad", const=True, default=lambda a: (INT32, [0] * (2 * _n_spatial(a)))),
            Param("dilations", const=True, default=lambda a: (INT32, [1] * _n_spatial(a))),
            Param("groups", const=True, default=(INT32, 1)),
        ),
        _infer_conv,
        print_order=("bias", "dilations", "groups", "pad", "pad_type", "strides", "weight", "x"),
    )
)
register(
    OpSpec(
        "scaled_dot_product_attention",
        (Param("query"), Param("key"), Param("value"), Param("attn_mask", required=False)),
        _infer_sdpa,
        min_opset="ios18",
    )
)
register(
    OpSpec(
        "constexpr_affine_dequantize",
        (
            Param("quantized_data", const=True),
            Param("zero_point", const=True),
            Param("scale", const=True),
            Param("axis", const=True),
        ),
        _infer_constexpr_affine_dequantize,
        min_opset="ios16",
        attributes_only=True,
        print_order=("axis", "quantized_data", "scale", "zero_point"),
    )
)
register(
    OpSpec(
        "quantize",
        (
            Param("input"),
            Param("zero_point", required=False, const=True),
            Param("scale", const=True),
            Param("axis", required=False, const=True),
            Param("output_dtype", const=True),
        ),
        _infer_quantize,
        min_opset="ios17",
        print_order=("input", "output_dtype", "scale", "zero_point", "axis"),
    )
)
register(
    OpSpec(
        "dequantize",
        (
            Param("input"),
            Param("zero_point", required=False, const=True),
            Param("scale", const=True),
            Param("axis", required=False, const=True),
        ),
        _infer_dequantize,
        min_opset="ios17",
        print_order=("input", "scale", "zero_point", "axis"),
    )
)


def infer_type(op_type: str, args: Mapping[str, Arg], opset: str = "ios18") -> TensorType:
    """Validate ``args`` against the registry (dtype rules of ``opset``); the output type."""
    spec = get_spec(op_type)
    view = Args(op_type, args, opset)
    for name in args:
        if name == "name":
            continue
        if spec.param(name) is None:
            known = ", ".join(p.name for p in spec.params)
            raise view.error(f"unexpected parameter '{name}' (parameters: {known})")
    for param in spec.params:
        if param.name not in args:
            if param.required and param.default is None:
                raise view.error(f"missing required parameter '{param.name}'")
            continue
        value = args[param.name]
        if param.variadic != isinstance(value, tuple):
            kind = "a tuple (a, b, ...)" if param.variadic else "a single value"
            raise view.error(f"parameter '{param.name}' must be {kind}")
        if isinstance(value, tuple) and not value:
            raise view.error(f"parameter '{param.name}' needs at least one value")
        if param.const:
            items = value if isinstance(value, tuple) else (value,)
            for item in items:
                if not _is_const(item):
                    raise view.error(
                        f"parameter '{param.name}' must be a constant, but '{item.name}' "
                        "is computed at run time"
                    )
    return spec.infer(view)


def _from_constants(arg: Arg) -> bool:
    """True if ``arg`` is computed from constants only (coremltools' is_descendant_of_const)."""
    if isinstance(arg, tuple):
        return all(_from_constants(a) for a in arg)
    if isinstance(arg, Literal):
        return True
    if arg.op is None:
        return False
    return all(_from_constants(v) for v in arg.op.input_vars())


def _is_const(item: Var | Literal) -> bool:
    if isinstance(item, Literal):
        return True
    return item.op is not None and item.op.op_type == "const"


def literal(dtype: DType, value: Any) -> Literal:
    """A literal of ``dtype`` from a Python or NumPy value (shape from the value)."""
    if dtype is STRING:
        if not isinstance(value, str):
            raise TypeError(f"string literal needs a str, got {type(value).__name__}")
        return Literal(TensorType(STRING, ()), value)
    arr = np.asarray(value, dtype=dtype.numpy)
    return Literal(TensorType(dtype, arr.shape), arr)


def literal_from_python(value: Any) -> Literal:
    """Infer a dtype for a plain Python value: bool, int32, fp16 (ANE-native) or string."""
    if isinstance(value, Literal):
        return value
    if isinstance(value, str):
        return literal(STRING, value)
    if isinstance(value, np.ndarray | np.generic):
        return literal(DType.from_numpy(value.dtype), value)
    flat = np.asarray(value).ravel().tolist()
    if flat and all(isinstance(v, bool | np.bool_) for v in flat):
        return literal(BOOL, value)
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in flat):
        return literal(INT32, value)
    return literal(FP16, value)
