"""Type inference per op, with NumPy as the oracle.

For random shapes the expected output shape comes from running the NumPy equivalent on zero
arrays (np.matmul with transposes, broadcasting, np.concatenate, reshape, transpose, slicing,
reductions with keepdims, sliding windows for conv). Where NumPy rejects the shapes, the op must
raise :class:`MILTypeError` with a message naming the problem.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from anetrain.errors import MILTypeError
from anetrain.mil import (
    BOOL,
    FP16,
    FP32,
    INT8,
    INT32,
    UINT8,
    Builder,
    DType,
    TensorType,
    Var,
    print_program,
)
from mil_strategies import small_shapes

SETTINGS = settings(max_examples=100, deadline=None)

float_dtypes = st.sampled_from([FP16, FP32])


def inputs(dtype: DType, *shapes: tuple[int, ...]) -> tuple[Builder, list[Var]]:
    b = Builder("ios18")
    return b, [b.input(f"in{i}", dtype, shape) for i, shape in enumerate(shapes)]


def zeros(shape: tuple[int, ...]) -> np.ndarray:
    return np.zeros(shape, dtype=np.float32)


def numpy_shape(fn: Any) -> tuple[int, ...] | Exception:
    """``fn()``'s shape, or the exception NumPy raised for invalid shapes."""
    try:
        return tuple(np.shape(fn()))
    except (ValueError, IndexError, TypeError) as err:  # AxisError is both
        return err


# ---- elementwise ----------------------------------------------------------------------------

shape_pairs = st.one_of(
    hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=4).map(
        lambda r: r.input_shapes
    ),
    st.tuples(small_shapes(), small_shapes()),
)


@SETTINGS
@given(st.sampled_from(["add", "sub", "mul", "real_div", "pow"]), shape_pairs, float_dtypes)
def test_elementwise_broadcasting(op: str, shapes: tuple, dtype: DType) -> None:
    xs, ys = shapes
    b, (x, y) = inputs(dtype, xs, ys)
    expected = numpy_shape(lambda: zeros(xs) + zeros(ys))
    if isinstance(expected, Exception):
        with pytest.raises(MILTypeError, match=r"do not broadcast"):
            b.op(op, x, y)
    else:
        assert b.op(op, x, y).type == TensorType(dtype, expected)
        assert b.op(op, y, x).type == TensorType(dtype, expected)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "real_div", "pow", "matmul"])
def test_mismatched_dtypes(op: str) -> None:
    b = Builder()
    x, y = b.input("x", FP16, [2, 2]), b.input("y", FP32, [2, 2])
    with pytest.raises(MILTypeError, match=r"dtypes differ: x is fp16, y is fp32"):
        b.op(op, x, y)


def test_int_elementwise_allowed_but_not_real_div_or_pow() -> None:
    b, (x, y) = inputs(INT32, (3, 1), (4,))
    assert b.add(x, y).type == TensorType(INT32, (3, 4))
    for op in ("real_div", "pow"):
        with pytest.raises(MILTypeError, match=rf"{op}: 'x' has dtype int32, expected fp16/fp32"):
            b.op(op, x, y)


def test_broadcasting_a_zero_sized_dim() -> None:
    b, (x, y) = inputs(FP16, (0, 3), (1, 3))
    assert b.add(x, y).type.shape == np.broadcast_shapes((0, 3), (1, 3)) == (0, 3)


# ---- unary, softmax, cast -------------------------------------------------------------------


@SETTINGS
@given(
    st.sampled_from(["exp", "sqrt", "sigmoid", "silu", "tanh", "log", "rsqrt"]),
    small_shapes(),
    float_dtypes,
)
def test_unary_preserves_type(op: str, shape: tuple, dtype: DType) -> None:
    b, (x,) = inputs(dtype, shape)
    assert b.op(op, x).type == TensorType(dtype, shape)


@pytest.mark.parametrize("op", ["exp", "sigmoid", "softmax", "log"])
def test_float_only_ops_reject_ints(op: str) -> None:
    b, (x,) = inputs(INT32, (2, 3))
    with pytest.raises(MILTypeError, match=rf"{op}: 'x' has dtype int32, expected fp16/fp32"):
        b.op(op, x)


def _np_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@SETTINGS
@given(small_shapes(min_rank=1), st.integers(-5, 4), float_dtypes)
def test_softmax_axis(shape: tuple, axis: int, dtype: DType) -> None:
    b, (x,) = inputs(dtype, shape)
    expected = numpy_shape(lambda: _np_softmax(zeros(shape), axis))
    if isinstance(expected, Exception):
        with pytest.raises(MILTypeError, match=rf"axis {axis} out of range for rank {len(shape)}"):
            b.softmax(x, axis)
    else:
        assert b.softmax(x, axis).type == TensorType(dtype, expected)


CASTS = {"fp16": FP16, "fp32": FP32, "int32": INT32, "int8": INT8, "uint8": UINT8, "bool": BOOL}


@SETTINGS
@given(small_shapes(), float_dtypes, st.sampled_from([*CASTS, "fp64", "int16", "string"]))
def test_cast(shape: tuple, dtype: DType, target: str) -> None:
    b, (x,) = inputs(dtype, shape)
    if target in CASTS:
        assert b.cast(x, target).type == TensorType(CASTS[target], shape)
    else:
        with pytest.raises(MILTypeError, match=rf"cannot cast to '{target}'"):
            b.cast(x, target)


# ---- reductions -----------------------------------------------------------------------------


@SETTINGS
@given(
    st.sampled_from(["reduce_sum", "reduce_mean", "reduce_max"]),
    small_shapes(),
    st.one_of(st.none(), st.lists(st.integers(-5, 4), max_size=4)),
    st.booleans(),
)
def test_reductions(op: str, shape: tuple, axes: list[int] | None, keep: bool) -> None:
    b, (x,) = inputs(FP16, shape)
    np_axis = None if axes is None else tuple(axes)
    expected = numpy_shape(lambda: np.sum(zeros(shape), axis=np_axis, keepdims=keep))
    kwargs = {"keep_dims": keep} if axes is None else {"axes": axes, "keep_dims": keep}
    if isinstance(expected, Exception):
        with pytest.raises(MILTypeError, match=r"out of range for rank|repeated axis"):
            b.op(op, x, **kwargs)
    else:
        assert b.op(op, x, **kwargs).type == TensorType(FP16, expected)


# ---- reshape, transpose ---------------------------------------------------------------------


@st.composite
def reshape_cases(draw: Any) -> tuple[tuple[int, ...], list[int]]:
    shape = draw(small_shapes())
    numel = math.prod(shape)
    if draw(st.booleans()):
        # a valid factorization, maybe with one -1
        rank = draw(st.integers(1, 4))
        target = [1] * rank
        rest = numel
        for p in range(2, numel + 1):
            while rest % p == 0:
                target[draw(st.integers(0, rank - 1))] *= p
                rest //= p
        if draw(st.booleans()):
            target[draw(st.integers(0, rank - 1))] = -1
    else:
        target = draw(st.lists(st.sampled_from([-1, 1, 2, 3, 4, 6]), min_size=0, max_size=4))
    return shape, target


@SETTINGS
@given(reshape_cases(), float_dtypes)
def test_reshape(case: tuple, dtype: DType) -> None:
    shape, target = case
    b, (x,) = inputs(dtype, shape)
    expected = numpy_shape(lambda: zeros(shape).reshape(target))
    if isinstance(expected, Exception):
        with pytest.raises(MILTypeError, match=r"cannot reshape|cannot infer -1|at most one -1"):
            b.reshape(x, target)
    else:
        assert b.reshape(x, target).type == TensorType(dtype, expected)


@pytest.mark.parametrize(
    ("target", "ios16", "ios18"),
    [
        ([0, -1], None, (3, 8)),  # iOS17+: 0s align with x's shape from the right
        ([0, 0, 4], (2, 3, 4), (2, 3, 4)),
        ([0, 4, 0], None, None),  # both copy axes 0 and 2: 32 elements, not 24
        ([0, 0, 0, 0], None, (1, 2, 3, 4)),  # iOS17+: a 0 with no axis of x to match is 1
        ([2, 0, 12], None, None),
    ],
)
def test_reshape_zero_copies_a_dimension(target: list[int], ios16: tuple, ios18: tuple) -> None:
    """coremltools' meaning of 0, which differs between iOS15/16 and iOS17+."""
    for dialect, want in (("ios16", ios16), ("ios18", ios18)):
        b = Builder(dialect)
        x = b.input("x", FP16, (2, 3, 4))
        if want is None:
            with pytest.raises(MILTypeError, match=r"0 in shape|cannot reshape|elements"):
                b.reshape(x, target)
        else:
            assert b.reshape(x, target).type == TensorType(FP16, want)


def test_reshape_zero_across_dialects() -> None:
    """With len(shape) == rank both rules agree; otherwise iOS15/16 refuse, so re-spelling an
    ios18 program for ios16 never changes a reshape's meaning silently."""
    b = Builder("ios18")
    x = b.input("x", FP16, (2, 3, 4))
    b.returns(b.reshape(x, [0, 0, 4], name="same"))
    print_program(b.program(), target="ios16")
    b = Builder("ios18")
    x = b.input("x", FP16, (2, 3, 4))
    b.returns(b.reshape(x, [0, -1], name="aligned"))  # [3, 8] in ios18
    with pytest.raises(MILTypeError, match=r"'aligned' cannot be written for ios16"):
        print_program(b.program(), target="ios16")


@SETTINGS
@given(small_shapes().flatmap(lambda s: st.tuples(st.just(s), st.permutations(range(len(s))))))
def test_transpose_valid_perms(case: tuple) -> None:
    shape, perm = case
    signs = [p - len(shape) if i % 2 else p for i, p in enumerate(perm)]  # mix negative axes
    b, (x,) = inputs(FP16, shape)
    expected = np.transpose(zeros(shape), signs).shape
    assert b.transpose(x, signs).type == TensorType(FP16, expected)


@SETTINGS
@given(
    small_shapes().flatmap(
        lambda s: st.tuples(
            st.just(s),
            st.lists(st.integers(-len(s), max(len(s) - 1, 0)), min_size=0, max_size=5),
        )
    )
)
def test_transpose_in_range_perms(case: tuple) -> None:
    shape, perm = case
    b, (x,) = inputs(FP16, shape)
    expected = numpy_shape(lambda: np.transpose(zeros(shape), perm))
    if isinstance(expected, Exception):
        with pytest.raises(MILTypeError, match=r"is not a permutation of rank"):
            b.transpose(x, perm)
    else:
        assert b.transpose(x, perm).type == TensorType(FP16, expected)


@pytest.mark.parametrize("perm", [[2, 1], [1, 2], [0, -3]])
def test_transpose_out_of_range_perm(perm: list[int]) -> None:
    b, (x,) = inputs(FP16, (2, 3))
    with pytest.raises(ValueError):  # NumPy: AxisError
        np.transpose(zeros((2, 3)), perm)
    with pytest.raises(MILTypeError, match=r"not a permutation"):
        b.transpose(x, perm)


# ---- slices ---------------------------------------------------------------------------------


@st.composite
def slice_by_size_cases(draw: Any) -> tuple:
    shape = draw(small_shapes(min_rank=1))
    begin = [draw(st.integers(-d - 1, d + 1)) for d in shape]
    size = [draw(st.integers(-1, d + 1)) for d in shape]
    return shape, begin, size


@SETTINGS
@given(slice_by_size_cases())
def test_slice_by_size(case: tuple) -> None:
    shape, begin, size = case
    b, (x,) = inputs(FP16, shape)
    index, problem = [], None
    for beg, sz, dim in zip(begin, size, shape, strict=True):  # the first bad axis is reported
        start = beg + dim if beg < 0 else beg
        stop = dim if sz == -1 else start + sz
        if beg < 0 and sz == -1:
            # begin=-k with size=-1 is read differently by different compilers: refused.
            problem = r"negative begin -\d+ with size -1 on axis \d+ is ambiguous"
            break
        if stop == start:  # no zero-size tensors
            problem = r"size 0 on axis \d+ selects nothing"
            break
        if not 0 <= start <= stop <= dim:
            problem = rf"slice \[{start}, {stop}\) on axis \d+ is out of bounds for size {dim}"
            break
        index.append(slice(start, stop))
    if problem is not None:
        with pytest.raises(MILTypeError, match=problem):
            b.slice_by_size(x, begin, size)
    else:
        expected = zeros(shape)[tuple(index)].shape
        assert b.slice_by_size(x, begin, size).type == TensorType(FP16, expected)


def test_slice_by_size_rank_mismatch() -> None:
    b, (x,) = inputs(FP16, (2, 3))
    with pytest.raises(MILTypeError, match=r"must have rank 2"):
        b.slice_by_size(x, [0], [1])


@st.composite
def slice_by_index_cases(draw: Any) -> tuple:
    shape = draw(small_shapes(min_rank=1))
    rank = len(shape)
    bools = st.lists(st.booleans(), min_size=rank, max_size=rank)
    return (
        shape,
        [draw(st.integers(-d - 2, d + 2)) for d in shape],
        [draw(st.integers(-d - 2, d + 2)) for d in shape],
        draw(st.one_of(st.none(), st.lists(st.integers(-3, 3), min_size=rank, max_size=rank))),
        draw(st.one_of(st.none(), bools)),
        draw(st.one_of(st.none(), bools)),
        draw(st.one_of(st.none(), bools)),
    )


@SETTINGS
@given(slice_by_index_cases())
def test_slice_by_index(case: tuple) -> None:
    shape, begin, end, stride, begin_mask, end_mask, squeeze_mask = case
    rank = len(shape)
    index: list[Any] = []
    for i in range(rank):
        if squeeze_mask and squeeze_mask[i]:  # begin_mask makes the squeezed index 0
            index.append(0 if begin_mask and begin_mask[i] else begin[i])
        else:
            index.append(
                slice(
                    None if begin_mask and begin_mask[i] else begin[i],
                    None if end_mask and end_mask[i] else end[i],
                    stride[i] if stride else 1,
                )
            )
    expected = numpy_shape(lambda: zeros(shape)[tuple(index)])
    b, (x,) = inputs(FP16, shape)
    kwargs = {
        key: value
        for key, value in {
            "stride": stride,
            "begin_mask": begin_mask,
            "end_mask": end_mask,
            "squeeze_mask": squeeze_mask,
        }.items()
        if value is not None
    }
    if isinstance(expected, Exception) or 0 in expected:  # no zero-size tensors
        with pytest.raises(MILTypeError, match=r"out of bounds|stride must be non-zero|nothing"):
            b.slice_by_index(x, begin, end, **kwargs)
    else:
        assert b.slice_by_index(x, begin, end, **kwargs).type == TensorType(FP16, expected)


def test_slice_by_index_mask_length() -> None:
    b, (x,) = inputs(FP16, (2, 3))
    with pytest.raises(MILTypeError, match=r"'end_mask' has 1 entries, expected rank 2"):
        b.slice_by_index(x, [0, 0], [1, 1], end_mask=[True])


# ---- concat ---------------------------------------------------------------------------------


@st.composite
def concat_cases(draw: Any) -> tuple:
    base = draw(small_shapes(min_rank=1))
    rank = len(base)
    axis = draw(st.integers(-rank - 1, rank))
    shapes = [base]
    for _ in range(draw(st.integers(0, 2))):
        how = draw(st.sampled_from(["same", "axis", "random"]))
        if how == "same":
            shapes.append(base)
        elif how == "axis" and -rank <= axis < rank:
            s = list(base)
            s[axis] = draw(st.integers(1, 4))
            shapes.append(tuple(s))
        else:
            shapes.append(draw(small_shapes()))
    return shapes, axis, draw(st.booleans())


@SETTINGS
@given(concat_cases(), float_dtypes)
def test_concat(case: tuple, dtype: DType) -> None:
    shapes, axis, interleave = case
    b, values = inputs(dtype, *shapes)
    arrays = [zeros(s) for s in shapes]
    expected = numpy_shape(lambda: np.concatenate(arrays, axis=axis))
    if not isinstance(expected, Exception) and interleave:
        # interleave: stack along a new axis after ``axis``, then merge the two
        expected = numpy_shape(
            lambda: np.stack(arrays, axis=axis % len(shapes[0]) + 1).reshape(expected)
        )
    if isinstance(expected, Exception):
        with pytest.raises(MILTypeError, match=r"cannot concat|out of range|interleave requires"):
            b.concat(values, axis, interleave)
    else:
        assert b.concat(values, axis, interleave).type == TensorType(dtype, expected)


def test_concat_interleave_needs_equal_shapes() -> None:
    b, values = inputs(FP16, (1, 2, 3), (1, 4, 3))
    assert b.concat(values, 1).type.shape == (1, 6, 3)
    with pytest.raises(MILTypeError, match=r"interleave requires all values to have the same"):
        b.concat(values, 1, True)


def test_concat_dtype_mismatch() -> None:
    b = Builder()
    x, y = b.input("x", FP16, [1, 2]), b.input("y", FP32, [1, 2])
    with pytest.raises(
        MILTypeError, match=r"cannot concat tensor<fp16, \[1, 2\]> with tensor<fp32"
    ):
        b.concat([x, y], 0)


# ---- matmul ---------------------------------------------------------------------------------


@st.composite
def matmul_cases(draw: Any) -> tuple:
    tx, ty = draw(st.booleans()), draw(st.booleans())
    if draw(st.booleans()):
        return draw(small_shapes()), draw(small_shapes()), tx, ty
    bx, by = draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3)
    ).input_shapes
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    xs = [*bx, k, m] if tx else [*bx, m, k]
    ys = [*by, n, k] if ty else [*by, k, n]
    if draw(st.integers(0, 4)) == 0:
        xs = [k]  # vector operand: rejected
    return tuple(xs), tuple(ys), tx, ty


@SETTINGS
@given(matmul_cases(), float_dtypes)
def test_matmul(case: tuple, dtype: DType) -> None:
    xs, ys, tx, ty = case
    xa, ya = zeros(xs), zeros(ys)
    if tx and xa.ndim >= 2:
        xa = np.swapaxes(xa, -1, -2)
    if ty and ya.ndim >= 2:
        ya = np.swapaxes(ya, -1, -2)
    expected = numpy_shape(lambda: np.matmul(xa, ya))
    b, (x, y) = inputs(dtype, xs, ys)
    if xa.ndim < 2 or ya.ndim < 2:
        # stricter than NumPy: vectors must be reshaped to [1, n] / [n, 1] first
        with pytest.raises(MILTypeError, match=r"operands must have rank >= 2"):
            b.matmul(x, y, tx, ty)
    elif isinstance(expected, Exception):
        if xa.shape[-1] != (ya.shape[-2] if ya.ndim >= 2 else ya.shape[0]):
            problem = r"inner dimensions differ"
        else:
            problem = r"batch dims of .* do not broadcast"
        with pytest.raises(MILTypeError, match=problem):
            b.matmul(x, y, tx, ty)
    else:
        assert b.matmul(x, y, tx, ty).type == TensorType(dtype, expected)


def test_matmul_inner_dims_message() -> None:
    b, (x, y) = inputs(FP16, (1, 2, 3), (1, 4, 2))
    with pytest.raises(MILTypeError, match=r"inner dimensions differ: x is \[1, 2, 3\], y is"):
        b.matmul(x, y)
    assert b.matmul(x, y, transpose_x=True, transpose_y=True).type.shape == (1, 3, 4)


# ---- conv -----------------------------------------------------------------------------------


@st.composite
def conv_cases(draw: Any) -> dict[str, Any]:
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 6))
    groups = draw(st.integers(1, 4))
    cg = c // groups if c % groups == 0 and draw(st.integers(0, 4)) else draw(st.integers(1, 4))
    oc = groups * draw(st.integers(1, 3)) if draw(st.integers(0, 4)) else draw(st.integers(1, 6))
    spatial = [draw(st.integers(1, 6)) for _ in range(2)]
    kernel = [draw(st.integers(1, 4)) for _ in range(2)]
    return {
        "x": (n, c, *spatial),
        "weight": (oc, cg, *kernel),
        "groups": groups,
        "strides": [draw(st.integers(1, 3)) for _ in range(2)],
        "dilations": [draw(st.integers(1, 3)) for _ in range(2)],
        "pad_type": draw(st.sampled_from(["valid", "same", "same_lower", "custom"])),
        "pad": [draw(st.integers(0, 2)) for _ in range(4)],
    }


def numpy_conv_shape(case: dict[str, Any]) -> tuple[int, ...]:
    """Output shape from sliding windows over the padded input (ValueError if none fit)."""
    n, c, *spatial = case["x"]
    oc, cg, *kernel = case["weight"]
    g = case["groups"]
    if c % g or oc % g or cg * g != c:
        raise ValueError("channels")
    if case["pad_type"] in ("same", "same_lower"):
        return (n, oc, *(-(-size // s) for size, s in zip(spatial, case["strides"], strict=True)))
    x = np.zeros(spatial)
    if case["pad_type"] == "custom":
        p = case["pad"]
        x = np.pad(x, [(p[0], p[1]), (p[2], p[3])])
    eff = [d * (k - 1) + 1 for d, k in zip(case["dilations"], kernel, strict=True)]
    windows = np.lib.stride_tricks.sliding_window_view(x, eff)
    sh, sw = case["strides"]
    return (n, oc, *windows[::sh, ::sw].shape[:2])


@SETTINGS
@given(conv_cases(), float_dtypes, st.booleans())
def test_conv(case: dict[str, Any], dtype: DType, blob_weight: bool) -> None:
    b, (x,) = inputs(dtype, case["x"])
    if blob_weight:
        w = b.weight("W", dtype, case["weight"], "weight.bin", 64)
    else:
        w = b.const(np.zeros(case["weight"], dtype=dtype.numpy), name="W")
    kwargs = {k: case[k] for k in ("groups", "strides", "dilations", "pad_type", "pad")}
    try:
        expected = numpy_conv_shape(case)
    except ValueError as err:
        c, oc, g = case["x"][1], case["weight"][0], case["groups"]
        if c % g or oc % g:
            problem = rf"groups={g} must divide input channels {c} and output channels {oc}"
        elif str(err) == "channels":
            problem = r"expects \d+ input channels \(groups=\d+\), x has \d+"
        else:
            problem = r"kernel \d+ does not fit spatial size \d+"
        with pytest.raises(MILTypeError, match=problem):
            b.conv(x, w, **kwargs)
    else:
        assert b.conv(x, w, **kwargs).type == TensorType(dtype, expected)


def test_conv_weight_dtype_and_bias() -> None:
    b, (x,) = inputs(FP16, (1, 4, 1, 8))
    w32 = np.zeros((4, 4, 1, 1), np.float32)
    # iOS17+ (coremltools' iOS17 conv): weight and bias may have the other float dtype
    assert b.conv(x, w32, bias=np.zeros(4, np.float32)).type == TensorType(FP16, (1, 4, 1, 8))
    old = Builder("ios16")
    x16 = old.input("x", FP16, (1, 4, 1, 8))
    with pytest.raises(MILTypeError, match=r"weight dtype fp32 differs from x dtype fp16"):
        old.conv(x16, w32)
    w = b.const(np.zeros((6, 4, 1, 1), np.float16))
    assert b.conv(x, w, bias=np.zeros(6, np.float16)).type == TensorType(FP16, (1, 6, 1, 8))
    with pytest.raises(
        MILTypeError, match=r"bias must be tensor<fp16, \[6\]>, got tensor<fp16, \[4\]>"
    ):
        b.conv(x, w, bias=np.zeros(4, np.float16))


@pytest.mark.parametrize("param", ["strides", "dilations"])
def test_conv_rejects_non_positive_strides_and_dilations(param: str) -> None:
    b, (x,) = inputs(FP16, (1, 4, 5, 5))
    w = b.const(np.zeros((4, 4, 3, 3), np.float16))
    with pytest.raises(MILTypeError, match=param):
        b.conv(x, w, **{param: [0, 1]})


def test_conv1d_with_default_attributes() -> None:
    b, (x,) = inputs(FP16, (1, 4, 8))
    w = b.const(np.zeros((6, 4, 3), np.float16))
    assert b.conv(x, w, strides=[1], dilations=[1], pad=[0, 0]).type.shape == (1, 6, 6)
    assert b.conv(x, w).type.shape == (1, 6, 6)


# ---- scaled dot-product attention -----------------------------------------------------------


@st.composite
def sdpa_cases(draw: Any) -> tuple:
    bq, bk, bv = draw(
        hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=1, max_dims=2, max_side=3)
    ).input_shapes
    if draw(st.integers(0, 3)):
        bk = bv = bq  # the common case: one shared batch
    length, s, e, ev = (draw(st.integers(1, 4)) for _ in range(4))
    qs, ks, vs = (*bq, length, e), (*bk, s, e), (*bv, s, ev)
    if draw(st.integers(0, 3)) == 0:  # break a core dimension
        if draw(st.booleans()):
            ks = (*bk, s, e + 1)
        else:
            vs = (*bv, s + 1, ev)
    mask = draw(
        st.one_of(
            st.none(),
            st.sampled_from(
                [(length, s), (1, s), (length, 1), (s,), (*bq, length, s), (2, *bq, length, s)]
            ),
        )
    )
    return qs, ks, vs, mask


@SETTINGS
@given(sdpa_cases(), float_dtypes, st.booleans())
def test_sdpa(case: tuple, dtype: DType, bool_mask: bool) -> None:
    qs, ks, vs, mask = case
    b, (q, k, v) = inputs(dtype, qs, ks, vs)

    def reference() -> np.ndarray:
        scores = zeros(qs) @ np.swapaxes(zeros(ks), -1, -2)
        if mask is not None:
            scores = scores + zeros(mask)
        return _np_softmax(scores, -1) @ zeros(vs)

    expected = numpy_shape(reference)
    kwargs = {}
    if mask is not None:
        kwargs["attn_mask"] = np.zeros(mask, bool if bool_mask else dtype.numpy)
    scores = (*qs[:-2], qs[-2], ks[-2])

    def call() -> Var:
        return b.scaled_dot_product_attention(q, k, v, **kwargs)

    if qs[-1] != ks[-1] or ks[-2] != vs[-2]:
        assert isinstance(expected, Exception)
        with pytest.raises(MILTypeError, match=r"incompatible shapes query"):
            call()
    elif not qs[:-2] == ks[:-2] == vs[:-2]:
        # stricter than NumPy: no broadcasting between query, key and value
        with pytest.raises(MILTypeError, match=r"must share rank and batch dimensions"):
            call()
    elif mask is not None and (
        isinstance(expected, Exception)
        or mask[-1] != ks[-2]
        or np.broadcast_shapes(mask, scores) != scores
    ):
        # the mask may broadcast up to the scores, never grow them
        with pytest.raises(MILTypeError, match=r"attn_mask .* does not fit the scores"):
            call()
    else:
        assert call().type == TensorType(dtype, expected)


def test_sdpa_rank_and_dtype() -> None:
    b, (q,) = inputs(FP16, (3, 4))
    with pytest.raises(MILTypeError, match=r"rank >= 3"):
        b.scaled_dot_product_attention(q, q, q)
    b, (q, k) = inputs(FP16, (1, 3, 4), (1, 3, 4))
    k32 = b.input("k32", FP32, (1, 3, 4))
    with pytest.raises(MILTypeError, match=r"share a dtype"):
        b.scaled_dot_product_attention(q, k32, k)
    with pytest.raises(MILTypeError, match=r"'attn_mask' has dtype int32"):
        b.scaled_dot_product_attention(q, k, k, np.zeros((3, 3), np.int32))


def test_sdpa_key_value_batch_mismatch() -> None:
    qs, ks, vs = (2, 3, 4), (2, 5, 4), (3, 5, 6)
    with pytest.raises(ValueError):
        _np_softmax(zeros(qs) @ np.swapaxes(zeros(ks), -1, -2), -1) @ zeros(vs)
    b, (q, k, v) = inputs(FP16, qs, ks, vs)
    with pytest.raises(MILTypeError, match=r"must share rank and batch dimensions"):
        b.scaled_dot_product_attention(q, k, v)


def test_sdpa_mask_larger_than_scores() -> None:
    qs, ks, vs, mask = (1, 3, 4), (1, 5, 4), (1, 5, 6), (4, 3, 5)
    b, (q, k, v) = inputs(FP16, qs, ks, vs)
    scores = zeros(qs) @ np.swapaxes(zeros(ks), -1, -2) + zeros(mask)
    assert (_np_softmax(scores, -1) @ zeros(vs)).shape == (4, 3, 6)  # NumPy grows the batch
    with pytest.raises(MILTypeError, match=r"attn_mask \[4, 3, 5\] does not fit the scores"):
        b.scaled_dot_product_attention(q, k, v, np.zeros(mask, np.float16))


# ---- quantization ---------------------------------------------------------------------------


@SETTINGS
@given(
    small_shapes(min_rank=1).flatmap(
        lambda s: st.tuples(st.just(s), st.integers(-len(s), len(s) - 1))
    ),
    st.sampled_from([INT8, UINT8]),
    float_dtypes,
    st.booleans(),
)
def test_constexpr_affine_dequantize(
    case: tuple, qdtype: DType, fdtype: DType, per_channel: bool
) -> None:
    shape, axis = case
    b = Builder()
    data = np.zeros(shape, qdtype.numpy)
    n = shape[axis]
    if per_channel:
        scale, zp = np.ones(n, fdtype.numpy), np.zeros(n, qdtype.numpy)
    else:
        scale, zp = fdtype.numpy.type(0.5), qdtype.numpy.type(0)
    out = b.constexpr_affine_dequantize(data, zp, scale, axis)
    assert out.type == TensorType(fdtype, shape)
    bad = np.ones(n + 1, fdtype.numpy)
    with pytest.raises(
        MILTypeError,
        match=rf"'scale' must be a scalar or have {n} entries \(axis {axis % len(shape)}\), "
        rf"got \[{n + 1}\]",
    ):
        b.constexpr_affine_dequantize(data, zp, bad, axis)
    with pytest.raises(MILTypeError, match=rf"'zero_point' must be a scalar or have {n} entries"):
        b.constexpr_affine_dequantize(data, np.zeros((n, 1), qdtype.numpy), scale, axis)


def test_constexpr_affine_dequantize_errors() -> None:
    b = Builder()
    data = np.zeros((4, 2), np.int8)
    # coremltools' ZeroPointT is int8, uint8 or fp32 whatever quantized_data's dtype is
    assert b.constexpr_affine_dequantize(data, np.uint8(0), np.float16(1), 0).type.dtype is FP16
    assert b.constexpr_affine_dequantize(data, np.float32(0.5), np.float32(1), 0).type.dtype is FP32
    with pytest.raises(MILTypeError, match=r"'zero_point' has dtype fp16, expected int8/uint8/"):
        b.constexpr_affine_dequantize(data, np.float16(0), np.float16(1), 0)
    with pytest.raises(MILTypeError, match=r"'scale' has dtype int32, expected fp16/fp32"):
        b.constexpr_affine_dequantize(data, np.int8(0), np.int32(1), 0)
    with pytest.raises(MILTypeError, match=r"axis 2 out of range for rank 2"):
        b.constexpr_affine_dequantize(data, np.int8(0), np.float16(1), 2)
    with pytest.raises(MILTypeError, match=r"'quantized_data' has dtype fp16"):
        b.constexpr_affine_dequantize(data.astype(np.float16), np.int8(0), np.float16(1), 0)


@SETTINGS
@given(small_shapes(min_rank=1), float_dtypes, st.sampled_from(["int8", "uint8"]))
def test_quantize_dequantize(shape: tuple, dtype: DType, out: str) -> None:
    b, (x,) = inputs(dtype, shape)
    scale = dtype.numpy.type(0.125)
    q = b.quantize(x, scale=scale, output_dtype=out)
    assert q.type == TensorType(DType(out), shape)
    assert b.dequantize(q, scale=scale).type == TensorType(dtype, shape)
    per_channel = np.ones(shape[-1], dtype.numpy)
    q2 = b.quantize(x, scale=per_channel, axis=-1, output_dtype=out)
    assert b.dequantize(q2, scale=per_channel, axis=-1).type == TensorType(dtype, shape)


def test_quantize_errors() -> None:
    b, (x,) = inputs(FP16, (2, 3))
    with pytest.raises(MILTypeError, match=r"output_dtype must be int8 or uint8, got 'int32'"):
        b.quantize(x, scale=np.float16(1), output_dtype="int32")
    with pytest.raises(MILTypeError, match=r"scale must have the dtype of input"):
        b.quantize(x, scale=np.float32(1), output_dtype="int8")
    with pytest.raises(MILTypeError, match=r"per-channel \(1-D\) scale needs 'axis'"):
        b.quantize(x, scale=np.ones(3, np.float16), output_dtype="int8")
    with pytest.raises(MILTypeError, match=r"scale has 3 entries, axis 0 has 2"):
        b.quantize(x, scale=np.ones(3, np.float16), axis=0, output_dtype="int8")
    with pytest.raises(MILTypeError, match=r"'axis' must be absent when scale is a scalar"):
        b.quantize(x, scale=np.float16(1), axis=0, output_dtype="int8")
    with pytest.raises(MILTypeError, match=r"scale must be non-zero"):
        b.quantize(x, scale=np.array([1, 0, 1], np.float16), axis=1, output_dtype="int8")
    with pytest.raises(MILTypeError, match=r"zero_point must have the shape of scale"):
        b.quantize(x, scale=np.float16(1), zero_point=np.zeros(3, np.int8), output_dtype="int8")
    with pytest.raises(MILTypeError, match=r"zero_point must have the output dtype"):
        b.quantize(x, scale=np.float16(1), zero_point=np.uint8(0), output_dtype="int8")
    with pytest.raises(MILTypeError, match=r"'input' has dtype fp16, expected int8/uint8"):
        b.dequantize(x, scale=np.float16(1))


def test_quantize_accepts_a_blobfile_scale() -> None:
    b, (x,) = inputs(FP16, (1, 16, 1, 4))
    scale = b.weight("s", FP16, [16], "weight.bin", 64)
    q_in = b.input("q", INT8, [1, 16, 1, 4])
    assert b.dequantize(q_in, scale=scale, axis=1).type == TensorType(FP16, (1, 16, 1, 4))
    assert b.quantize(x, scale=scale, axis=1, output_dtype="int8").type == TensorType(
        INT8, (1, 16, 1, 4)
    )
