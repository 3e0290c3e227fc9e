"""Hypothesis strategies for MIL tests: random valid programs built through the Builder.

``programs(target)`` draws a chain of the registry's ops with consistent shapes: elementwise
ops with broadcasting, unary ops, softmax, reductions, reshape, transpose, both slices, concat
(incl. interleave), matmul with transpose flags, conv (incl. groups, weights inline or as
BLOBFILE refs), cast, constexpr_affine_dequantize and, for ios18 only, scaled dot-product
attention and quantize/dequantize. Constants use awkward fp16/fp32 values (1/768, -65504,
subnormals, inf, nan, -0.0) and string constants with quotes, backslashes and newlines.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from anetrain.mil import (
    BOOL,
    FP16,
    FP32,
    INT8,
    UINT8,
    BlobRef,
    Builder,
    DType,
    Function,
    Literal,
    Program,
    TensorType,
    Var,
)

# Identifiers the printer writes but the parser reads as literals (see test_mil_builder).
RESERVED_WORDS = frozenset({"true", "false", "inf", "nan"})

identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True).filter(
    lambda s: s not in RESERVED_WORDS
)

# Text for string literals: quotes, backslashes, escapes, newlines and non-ASCII on purpose.
string_values = st.one_of(
    st.sampled_from(['a"b', "back\\slash", "\\n", "line\nbreak", 'end\\"', "", "tab\there", "é∑"]),
    st.text(max_size=12),
)

_SPECIAL = [
    1 / 768,
    -65504.0,
    65504.0,
    2.0**-24,  # smallest fp16 subnormal
    -(2.0**-24),
    2.0**-14 - 2.0**-24,  # largest fp16 subnormal
    6e-8,
    1e-5,
    0.125,
    -0.5,
    0.0,
    -0.0,
    math.inf,
    -math.inf,
    math.nan,
    1e-45,  # fp32 subnormal (0 in fp16)
    3.4028234663852886e38,  # fp32 max (inf in fp16)
]


def float_values(dtype: DType) -> st.SearchStrategy[float]:
    """Exactly representable values of ``dtype``, biased towards awkward ones."""
    npt = dtype.numpy.type
    with np.errstate(over="ignore"):
        special = [float(npt(v)) for v in _SPECIAL]  # keeps -0.0 and 0.0 apart
    width = 16 if dtype is FP16 else 32
    return st.one_of(st.sampled_from(special), st.floats(width=width))


def float_arrays(
    dtype: DType, shape: tuple[int, ...], nonzero: bool = False
) -> st.SearchStrategy[np.ndarray]:
    values = float_values(dtype)
    if nonzero:
        values = values.filter(lambda v: v != 0)
    return hnp.arrays(dtype.numpy, shape, elements=values, fill=values)


def small_shapes(min_rank: int = 0, max_rank: int = 4, max_side: int = 4) -> st.SearchStrategy:
    return hnp.array_shapes(min_dims=min_rank, max_dims=max_rank, min_side=1, max_side=max_side)


@dataclass
class BuiltProgram:
    """A program drawn by :func:`programs` and the op types it contains."""

    program: Program
    target: str
    op_types: list[str] = field(default_factory=list)

    def __repr__(self) -> str:  # hypothesis prints this for a failing example
        from anetrain.mil import print_program

        return "BuiltProgram(\n" + print_program(self.program) + ")"


MAX_NUMEL = 1024  # operands above this size are not reused, so programs stay small

IOS16_KINDS = (
    "elementwise",
    "unary",
    "softmax",
    "reduce",
    "reshape",
    "transpose",
    "slice_by_size",
    "slice_by_index",
    "concat",
    "matmul",
    "conv",
    "cast",
    "constexpr_affine_dequantize",
    "scalar_consts",
)
IOS18_ONLY_KINDS = ("scaled_dot_product_attention", "quantize_dequantize")


class _Gen:
    """Mutable state while drawing one program."""

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any], b: Builder) -> None:
        self.draw = draw
        self.b = b
        self.pool: list[Var] = []  # float tensors ops can consume
        self.leaves: list[Var] = []  # other results (ints, bools, strings) that may be returned
        self.n_names = 0
        self.n_weights = 0
        self.weight_offset = 64

    # ---- helpers ---------------------------------------------------------------------------

    def name(self) -> str | None:
        """None (auto name) or an explicit name no auto name can collide with."""
        if not self.draw(st.booleans()):
            return None
        self.n_names += 1
        return f"v{self.n_names}_{self.draw(identifiers)}"

    def pick(self, pred: Callable[[Var], bool] = lambda v: True) -> Var | None:
        candidates = [v for v in self.pool if v.type.numel <= MAX_NUMEL and pred(v)]
        return self.draw(st.sampled_from(candidates)) if candidates else None

    def add(self, var: Var) -> Var:
        self.pool.append(var)
        return var

    def tensor_const(self, dtype: DType, shape: tuple[int, ...]) -> Any:
        """Inline constant data, a named const var, or a BLOBFILE weight."""
        how = self.draw(st.sampled_from(["array", "const", "weight"]))
        if how == "weight":
            return self.weight(dtype, shape)
        data = self.draw(float_arrays(dtype, shape))
        return data if how == "array" else self.b.const(data, name=self.name())

    def weight(self, dtype: DType, shape: tuple[int, ...]) -> Var:
        self.n_weights += 1
        file = self.draw(st.sampled_from(["weight.bin", "w.bin", "wq.bin"]))
        w = self.b.weight(f"W{self.n_weights}", dtype, shape, file, self.weight_offset)
        nbytes = math.prod(shape) * dtype.itemsize
        self.weight_offset += 64 + -(-nbytes // 64) * 64
        return w

    def scalar(self, dtype: DType, nonzero: bool = False) -> Any:
        """A float scalar of ``dtype``: a NumPy scalar (becomes a const) or a const var."""
        values = float_values(dtype).filter(lambda v: v != 0) if nonzero else float_values(dtype)
        value = dtype.numpy.type(self.draw(values))
        return value if self.draw(st.booleans()) else self.b.const(value, name=self.name())

    def axis(self, rank: int) -> int:
        axis = self.draw(st.integers(0, rank - 1))
        return axis - rank if self.draw(st.booleans()) else axis

    # ---- op generators ---------------------------------------------------------------------

    def elementwise(self) -> None:
        op = self.draw(st.sampled_from(["add", "sub", "mul", "real_div", "pow"]))
        x = self.pick()
        assert x is not None
        source = self.draw(st.sampled_from(["var", "const", "scalar"]))
        y: Any = None
        if source == "var":
            y = self.pick(lambda v: v.dtype == x.dtype and _broadcastable(v.shape, x.shape))
        if y is None and source in ("var", "const"):
            shape = self.broadcast_partner(x.shape)
            y = self.tensor_const(x.dtype, shape)
        if y is None:
            if x.dtype is FP16 and self.draw(st.booleans()):
                y = float(np.float16(self.draw(float_values(FP16))))  # plain Python float
            else:
                y = self.scalar(x.dtype)
        args = (y, x) if self.draw(st.booleans()) else (x, y)
        self.add(self.b.op(op, *args, name=self.name()))

    def broadcast_partner(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        drop = self.draw(st.integers(0, len(shape)))
        out = []
        for d in shape[drop:]:
            if d == 1:
                out.append(self.draw(st.integers(1, 3)))
            else:
                out.append(d if self.draw(st.integers(0, 3)) else 1)
        if len(shape) < 4 and drop == 0 and self.draw(st.integers(0, 4)) == 0:
            out.insert(0, 2)
        return tuple(out)

    def unary(self) -> None:
        op = self.draw(st.sampled_from(["exp", "sqrt", "sigmoid", "silu", "tanh", "log", "rsqrt"]))
        x = self.pick()
        assert x is not None
        kwargs: dict[str, Any] = {}
        if op in ("log", "rsqrt") and self.draw(st.booleans()):
            kwargs["epsilon"] = self.scalar(x.dtype)
        self.add(self.b.op(op, x, name=self.name(), **kwargs))

    def softmax(self) -> None:
        x = self.pick(lambda v: v.type.rank >= 1)
        if x is None:
            return
        if self.draw(st.booleans()):
            self.add(self.b.softmax(x, name=self.name()))
        else:
            self.add(self.b.softmax(x, self.axis(x.type.rank), name=self.name()))

    def reduce(self) -> None:
        op = self.draw(st.sampled_from(["reduce_sum", "reduce_mean", "reduce_max"]))
        x = self.pick()
        assert x is not None
        rank = x.type.rank
        kwargs: dict[str, Any] = {}
        if rank and self.draw(st.integers(0, 3)):
            axes = self.draw(st.lists(st.integers(0, rank - 1), min_size=1, unique=True))
            kwargs["axes"] = [a - rank if self.draw(st.booleans()) else a for a in axes]
        keep = self.draw(st.sampled_from([None, True, False]))
        if keep is not None:
            kwargs["keep_dims"] = keep
        self.add(self.b.op(op, x, name=self.name(), **kwargs))

    def reshape(self) -> None:
        x = self.pick()
        assert x is not None
        target = self.factor_shape(x.type.numel)
        if target and self.draw(st.booleans()):
            target[self.draw(st.integers(0, len(target) - 1))] = -1
        self.add(self.b.reshape(x, target, name=self.name()))

    def factor_shape(self, numel: int) -> list[int]:
        rank = self.draw(st.integers(1, 4))
        out = [1] * rank
        for p in _prime_factors(numel):
            out[self.draw(st.integers(0, rank - 1))] *= p
        return out

    def transpose(self) -> None:
        x = self.pick()
        assert x is not None
        rank = x.type.rank
        perm = self.draw(st.permutations(list(range(rank))))
        perm = [p - rank if self.draw(st.booleans()) else p for p in perm]
        self.add(self.b.transpose(x, perm, name=self.name()))

    def slice_by_size(self) -> None:
        x = self.pick(lambda v: v.type.rank >= 1)
        if x is None:
            return
        begin, size = [], []
        for d in x.shape:
            b0 = self.draw(st.integers(0, d - 1))
            s = self.draw(st.integers(1, d - b0))
            to_end = s == d - b0 and self.draw(st.booleans())
            # a negative begin with size -1 is rejected as ambiguous
            begin.append(b0 - d if not to_end and self.draw(st.booleans()) else b0)
            size.append(-1 if to_end else s)
        self.add(self.b.slice_by_size(x, begin, size, name=self.name()))

    def slice_by_index(self) -> None:
        x = self.pick(lambda v: v.type.rank >= 1)
        if x is None:
            return
        rank = x.type.rank
        begin, end, stride = [], [], []
        for d in x.shape:
            b0 = self.draw(st.integers(0, d - 1))
            begin.append(b0 - d if self.draw(st.booleans()) else b0)
            end.append(self.draw(st.integers(b0 + 1, d)))
            stride.append(self.draw(st.integers(1, 3)))
        kwargs: dict[str, Any] = {}
        if self.draw(st.booleans()) or any(s != 1 for s in stride):
            kwargs["stride"] = stride
        for key in ("begin_mask", "end_mask"):
            if self.draw(st.booleans()):
                kwargs[key] = self.draw(st.lists(st.booleans(), min_size=rank, max_size=rank))
        if rank > 1 and self.draw(st.booleans()):
            squeeze = [False] * rank
            squeeze[self.draw(st.integers(0, rank - 1))] = True
            kwargs["squeeze_mask"] = squeeze
        self.add(self.b.slice_by_index(x, begin, end, name=self.name(), **kwargs))

    def concat(self) -> None:
        x = self.pick(lambda v: v.type.rank >= 1)
        if x is None:
            return
        rank = x.type.rank
        axis = self.axis(rank)
        interleave = self.draw(st.booleans())
        values: list[Any] = [x]
        for _ in range(self.draw(st.integers(1, 2))):
            if interleave or self.draw(st.booleans()):
                shape = x.shape
            else:
                shape = tuple(
                    self.draw(st.integers(1, 3)) if i == axis % rank else d
                    for i, d in enumerate(x.shape)
                )
            partner = self.pick(lambda v, s=shape: v.dtype == x.dtype and v.shape == s)
            values.append(partner if partner is not None else self.tensor_const(x.dtype, shape))
        values = self.draw(st.permutations(values))
        kwargs: dict[str, Any] = {}
        if interleave or self.draw(st.booleans()):
            kwargs["interleave"] = interleave
        self.add(self.b.concat(values, axis, name=self.name(), **kwargs))

    def matmul(self) -> None:
        x = self.pick(lambda v: v.type.rank >= 2)
        if x is None:
            return
        flags = {
            "transpose_x": self.draw(st.sampled_from([None, True, False])),
            "transpose_y": self.draw(st.sampled_from([None, True, False])),
        }
        tx, ty = bool(flags["transpose_x"]), bool(flags["transpose_y"])
        shape = list(x.shape)
        if tx and len(shape) >= 2:
            shape[-1], shape[-2] = shape[-2], shape[-1]
        k = shape[-1]
        if len(shape) >= 2 and self.draw(st.integers(0, 2)) == 0:
            # x @ x^T or x^T @ x: always consistent.
            flags = {"transpose_x": tx, "transpose_y": not tx}
            y: Any = x
        else:
            n = self.draw(st.integers(1, 4))
            batch = [] if len(shape) <= 2 else self.broadcast_partner(tuple(shape[:-2]))
            yshape = [*batch, n, k] if ty else [*batch, k, n]
            y = self.tensor_const(x.dtype, tuple(yshape))
        kwargs = {key: value for key, value in flags.items() if value is not None}
        if kwargs and len(set(kwargs.values())) == 1 and self.draw(st.booleans()):
            # the dyn-matmul style: one named bool const shared by both flags
            shared = self.b.const(next(iter(kwargs.values())), name=self.name(), dtype=BOOL)
            kwargs = dict.fromkeys(kwargs, shared)
        self.add(self.b.matmul(x, y, name=self.name(), **kwargs))

    def conv(self) -> None:
        x = self.pick(lambda v: v.type.rank == 4 and v.shape[1] <= 8)
        if x is None:
            return
        channels = x.shape[1]
        divisors = [g for g in range(1, channels + 1) if channels % g == 0]
        groups = self.draw(st.sampled_from(divisors))
        oc = groups * self.draw(st.integers(1, 3))
        pad_type = self.draw(st.sampled_from(["valid", "same", "same_lower", "custom"]))
        kernel, strides, dilations, pads = [], [], [], []
        for size in x.shape[2:]:
            k, d = self.draw(st.integers(1, 3)), self.draw(st.integers(1, 2))
            lo, hi = self.draw(st.integers(0, 1)), self.draw(st.integers(0, 1))
            padded = size + lo + hi if pad_type == "custom" else size
            if pad_type in ("valid", "custom") and padded < d * (k - 1) + 1:
                k = 1
            kernel.append(k)
            strides.append(self.draw(st.integers(1, 2)))
            dilations.append(d)
            pads += [lo, hi]
        wshape = (oc, channels // groups, *kernel)
        weight = self.tensor_const(x.dtype, wshape)
        kwargs: dict[str, Any] = {}
        if pad_type != "valid" or self.draw(st.booleans()):
            kwargs["pad_type"] = pad_type
        if pad_type == "custom" or self.draw(st.booleans()):
            kwargs["pad"] = pads
        if any(s != 1 for s in strides) or self.draw(st.booleans()):
            kwargs["strides"] = strides
        if any(d != 1 for d in dilations) or self.draw(st.booleans()):
            kwargs["dilations"] = dilations
        if groups != 1 or self.draw(st.booleans()):
            kwargs["groups"] = groups
        if self.draw(st.booleans()):
            kwargs["bias"] = self.draw(float_arrays(x.dtype, (oc,)))
        self.add(self.b.conv(x, weight, name=self.name(), **kwargs))

    def cast(self) -> None:
        x = self.pick()
        assert x is not None
        target = self.draw(st.sampled_from(["fp16", "fp32", "fp16", "fp32", "int32", "bool"]))
        dtype: Any = target if self.draw(st.booleans()) else self.b.const(target, name=self.name())
        out = self.b.cast(x, dtype, name=self.name())
        (self.pool if target in ("fp16", "fp32") else self.leaves).append(out)

    def constexpr_affine_dequantize(self) -> None:
        qdtype = self.draw(st.sampled_from([INT8, UINT8]))
        fdtype = self.draw(st.sampled_from([FP16, FP32]))
        shape = self.draw(small_shapes(min_rank=1))
        axis = self.draw(st.integers(0, len(shape) - 1))
        data: Any
        if self.draw(st.booleans()):
            data = self.weight(qdtype, shape)
        else:
            data = self.draw(hnp.arrays(qdtype.numpy, shape))
        if self.draw(st.booleans()):
            scale = self.draw(float_arrays(fdtype, (shape[axis],)))
            zero_point = self.draw(hnp.arrays(qdtype.numpy, (shape[axis],)))
        else:
            scale = fdtype.numpy.type(self.draw(float_values(fdtype)))
            zero_point = qdtype.numpy.type(self.draw(st.integers(0, 127)))
        self.add(
            self.b.constexpr_affine_dequantize(
                data,
                zero_point,
                scale,
                axis if self.draw(st.booleans()) else axis - len(shape),
                name=self.name(),
            )
        )

    def scaled_dot_product_attention(self) -> None:
        q = self.pick(lambda v: v.type.rank >= 3)
        if q is None:
            return
        *batch, length, e = q.shape
        if self.draw(st.booleans()):
            key: Any = q
            s = length
        else:
            s = self.draw(st.integers(1, 4))
            key = self.tensor_const(q.dtype, (*batch, s, e))
        value = (
            key
            if self.draw(st.booleans())
            else self.tensor_const(q.dtype, (*batch, s, self.draw(st.integers(1, 4))))
        )
        kwargs: dict[str, Any] = {}
        if self.draw(st.booleans()):
            mask = np.triu(np.full((length, s), -65504.0), k=1).astype(q.dtype.numpy)
            kwargs["attn_mask"] = mask if self.draw(st.booleans()) else mask == 0
        self.add(self.b.scaled_dot_product_attention(q, key, value, name=self.name(), **kwargs))

    def quantize_dequantize(self) -> None:
        x = self.pick(lambda v: v.type.rank >= 1)
        if x is None:
            return
        out_dtype = self.draw(st.sampled_from([INT8, UINT8]))
        kwargs: dict[str, Any] = {}
        if self.draw(st.booleans()):
            axis = self.axis(x.type.rank)
            n = x.shape[axis]
            kwargs["axis"] = axis
            scale: Any = self.draw(float_arrays(x.dtype, (n,), nonzero=True))
            if self.draw(st.booleans()):
                kwargs["zero_point"] = self.draw(hnp.arrays(out_dtype.numpy, (n,)))
        else:
            scale = self.scalar(x.dtype, nonzero=True)
            if self.draw(st.booleans()):
                kwargs["zero_point"] = out_dtype.numpy.type(self.draw(st.integers(0, 127)))
        q = self.b.quantize(x, scale=scale, output_dtype=str(out_dtype), name=self.name(), **kwargs)
        self.leaves.append(q)
        self.add(self.b.dequantize(q, scale=scale, name=self.name(), **kwargs))

    def scalar_consts(self) -> None:
        """Unused constants: strings with escapes, bools, ints, float scalars."""
        kind = self.draw(st.sampled_from(["string", "bool", "int", "float"]))
        if kind == "string":
            var = self.b.const(self.draw(string_values), name=self.name())
        elif kind == "bool":
            var = self.b.const(self.draw(st.booleans()), name=self.name())
        elif kind == "int":
            var = self.b.const(self.draw(st.integers(-(2**31), 2**31 - 1)), name=self.name())
        else:
            dtype = self.draw(st.sampled_from([FP16, FP32]))
            var = self.b.const(dtype.numpy.type(self.draw(float_values(dtype))), name=self.name())
        self.leaves.append(var)


def _broadcastable(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """``a`` broadcasts against ``b`` without growing the result beyond ``b``'s shape."""
    if len(a) > len(b):
        return False
    return all(da in (1, db) for da, db in zip(reversed(a), reversed(b), strict=False))


def _prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out


@st.composite
def programs(
    draw: Callable[[st.SearchStrategy[Any]], Any],
    target: str = "ios18",
    ios16_ops_only: bool = False,
    max_ops: int = 8,
    kinds: tuple[str, ...] | None = None,
) -> BuiltProgram:
    """A random valid program built with ``Builder(target)``.

    ``kinds`` restricts the op generators (names from ``IOS16_KINDS``/``IOS18_ONLY_KINDS``).
    The first input has rank >= 2 (half the time the ANE layout ``[1, C, H, W]``), so matmul,
    conv and attention always find an operand.
    """
    b = Builder(target)
    gen = _Gen(draw, b)
    for i in range(draw(st.integers(1, 3))):
        dtype = draw(st.sampled_from([FP16, FP32]))
        if i == 0 and draw(st.booleans()):
            shape = (1, draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 6)))
        else:
            shape = draw(small_shapes(min_rank=2 if i == 0 else 1))
        gen.add(b.input(f"x{i}", dtype, shape))
    if kinds is None:
        kinds = IOS16_KINDS
        if target == "ios18" and not ios16_ops_only:
            kinds += IOS18_ONLY_KINDS
    op_types: list[str] = []
    for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=max_ops)):
        before = len(b.function.operations)
        getattr(gen, kind)()
        op_types += [op.op_type for op in b.function.operations[before:]]
    candidates = gen.pool + gen.leaves
    outputs = draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=3, unique_by=id))
    b.returns(*outputs)
    build_info = None
    if draw(st.booleans()):
        build_info = draw(st.dictionaries(string_values, string_values, max_size=3))
    return BuiltProgram(b.program(build_info), target, op_types)


# ---- structural comparison --------------------------------------------------------------------


def literals_equal(a: Literal, b: Literal) -> bool:
    """Same type and same data; floats compared bit for bit (any NaN equals any NaN)."""
    if a.type != b.type or type(a.data) is not type(b.data):
        return False
    if isinstance(a.data, BlobRef | str):
        return a.data == b.data
    x, y = np.asarray(a.data), np.asarray(b.data)
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if x.dtype.kind != "f":
        return bool(np.array_equal(x, y))
    nan_x, nan_y = np.isnan(x), np.isnan(y)
    bits = {2: np.uint16, 4: np.uint32}[x.dtype.itemsize]
    return bool(
        np.array_equal(nan_x, nan_y) and np.array_equal(x[~nan_x].view(bits), y[~nan_y].view(bits))
    )


def _arg_repr(arg: Any) -> Any:
    if isinstance(arg, tuple):
        return tuple(_arg_repr(a) for a in arg)
    if isinstance(arg, Var):
        return ("var", arg.name, arg.type)
    return ("literal", arg)


def _args_equal(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) or isinstance(b, tuple):
        return (
            isinstance(a, tuple)
            and isinstance(b, tuple)
            and len(a) == len(b)
            and all(_args_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, Var) or isinstance(b, Var):
        return isinstance(a, Var) and isinstance(b, Var) and (a.name, a.type) == (b.name, b.type)
    return literals_equal(a, b)


def assert_functions_equal(a: Function, b: Function, check_opset: bool = True) -> None:
    """Same inputs, statements (op, output names and types, arguments in order) and outputs."""
    assert a.name == b.name
    if check_opset:
        assert a.opset == b.opset
    assert [(v.name, v.type) for v in a.inputs] == [(v.name, v.type) for v in b.inputs]
    assert len(a.operations) == len(b.operations)
    for op_a, op_b in zip(a.operations, b.operations, strict=True):
        where = f"statement {op_a.outputs[0].name}"
        assert op_a.op_type == op_b.op_type, where
        assert [(v.name, v.type) for v in op_a.outputs] == [
            (v.name, v.type) for v in op_b.outputs
        ], where
        assert list(op_a.inputs) == list(op_b.inputs), where
        for key in op_a.inputs:
            assert _args_equal(op_a.inputs[key], op_b.inputs[key]), f"{where}: input {key}"
        assert list(op_a.attributes) == list(op_b.attributes), where
        for key in op_a.attributes:
            assert literals_equal(op_a.attributes[key], op_b.attributes[key]), (
                f"{where}: attribute {key}: {op_a.attributes[key]} != {op_b.attributes[key]}"
            )
    assert [v.name for v in a.outputs] == [v.name for v in b.outputs]
    assert [v.type for v in a.outputs] == [v.type for v in b.outputs]


def assert_programs_equal(a: Program, b: Program, check_version: bool = True) -> None:
    if check_version:
        assert a.version == b.version
    assert a.build_info == b.build_info
    assert list(a.functions) == list(b.functions)
    for name in a.functions:
        assert_functions_equal(a.functions[name], b.functions[name], check_opset=check_version)


def var_types(program: Program) -> dict[str, TensorType]:
    return {name: var.type for name, var in program.main.vars().items()}
