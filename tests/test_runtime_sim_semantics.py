"""Regression tests for op semantics the differential test against coremltools found wrong.

Each test runs a real program through ``runtime.compile(..., backend="sim")`` and checks it
against float64 NumPy following coremltools' definition of the op (no coremltools needed).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from anetrain import runtime
from anetrain.errors import MILTypeError
from anetrain.mil import BOOL, FP16, FP32, Builder, parse_program, print_program
from anetrain.mil.types import INT32

RNG = np.random.default_rng(18)
M4 = runtime.get_chip("m4")
HONOURS_MASK = dataclasses.replace(M4, sdpa_ignores_mask=False)


def f16(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float64)


def compile_sim(b: Builder, chip=M4):
    """A compiled kernel whose call returns the output as [C, H*W] (like the input)."""
    kernel = runtime.compile(b.program(), backend="sim", chip=chip)
    return lambda x: kernel(x).reshape(kernel.output.channels, -1)


def test_slice_squeezing_every_axis_reads_the_current_input() -> None:
    """It used to bind a NumPy scalar copied at compile time (zeros), read by every later op."""
    b = Builder("ios18")
    x = b.input("x", FP16, [1, 4, 1, 3])
    picked = b.slice_by_index(x, [0, 2, 0, 1], [1, 3, 1, 2], squeeze_mask=[True] * 4)
    assert picked.type.shape == ()
    b.returns(b.mul(x, picked))
    k = compile_sim(b)
    for _ in range(2):  # a second input must not see the first one's value either
        xv = f16(RNG.standard_normal((4, 3)))
        got = k(xv)
        np.testing.assert_array_equal(got, f16(xv * xv[2, 1]))


def test_squeeze_with_begin_mask_takes_index_zero() -> None:
    """begin_mask wins over begin on a squeezed axis too (coremltools: begin becomes 0)."""
    b = Builder("ios18")
    x = b.input("x", FP16, [1, 4, 1, 3])
    # begin[1] = 9 is out of range, but begin_mask says to ignore it
    s = b.slice_by_index(
        x,
        [0, 9, 0, 0],
        [1, 4, 1, 3],
        begin_mask=[False, True, False, False],
        squeeze_mask=[False, True, False, False],
    )
    assert s.type.shape == (1, 1, 3)
    b.returns(b.reshape(s, b.const([1, 1, 1, 3], dtype=INT32)))
    xv = f16(RNG.standard_normal((4, 3)))
    np.testing.assert_array_equal(compile_sim(b)(xv), xv[:1])


def _sdpa(mask: np.ndarray, chip) -> np.ndarray:
    b = Builder("ios18")
    x = b.input("x", FP32, [1, 2, 4, 3])
    b.returns(b.scaled_dot_product_attention(x, x, x, attn_mask=mask))
    return compile_sim(b, chip)(XQ.reshape(2, 12)).reshape(1, 2, 4, 3)


XQ = RNG.standard_normal((1, 2, 4, 3)).astype(np.float32)
CAUSAL = np.tril(np.ones((4, 4), bool))


def sdpa_reference(additive: np.ndarray | None) -> np.ndarray:
    q = XQ.astype(np.float64)
    scores = q @ q.swapaxes(-1, -2) / np.sqrt(3)
    if additive is not None:
        scores = scores + additive
    p = np.exp(scores - scores.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ q


def test_sdpa_bool_mask_is_zero_or_minus_inf() -> None:
    """True keeps a key (adds 0), False drops it (adds -inf); it used to add 1 and 0."""
    want = sdpa_reference(np.where(CAUSAL, 0.0, -np.inf))
    np.testing.assert_allclose(_sdpa(CAUSAL, HONOURS_MASK), want, rtol=1e-5, atol=1e-6)
    float_mask = np.where(CAUSAL, 0.0, -1e4).astype(np.float32)
    np.testing.assert_allclose(
        _sdpa(float_mask, HONOURS_MASK), sdpa_reference(float_mask), rtol=1e-5, atol=1e-6
    )


def test_default_profile_ignores_the_mask() -> None:
    """The hardware quirk the default profiles keep on purpose (see docs/runtime.md)."""
    assert M4.sdpa_ignores_mask
    np.testing.assert_allclose(_sdpa(CAUSAL, M4), sdpa_reference(None), rtol=1e-5, atol=1e-6)


def _unary(op: str, dtype, values: np.ndarray, target: str = "ios18", **kwargs) -> np.ndarray:
    b = Builder(target)
    x = b.input("x", dtype, [1, values.size, 1, 1])
    b.returns(getattr(b, op)(x, **kwargs))
    return compile_sim(b)(values.reshape(-1, 1)).reshape(-1)


def test_fp16_log_of_zero_with_default_epsilon_is_minus_inf() -> None:
    """The default epsilon (1e-45) is taken in x's dtype: 0 in fp16, so log(0) = -inf."""
    zero = np.zeros(1)
    assert _unary("log", FP16, zero)[0] == -np.inf
    assert _unary("log", FP16, zero, "ios16")[0] == -np.inf
    assert _unary("log", FP32, zero)[0] == pytest.approx(np.log(np.float32(1e-45)), rel=1e-6)
    assert _unary("rsqrt", FP16, zero)[0] == np.inf  # fp16(1e-12) is 0 too
    # an explicit fp32 epsilon (iOS17+) is added in fp32 before the fp16 rounding
    got = _unary("log", FP16, zero, epsilon=np.float32(1e-45))[0]
    assert got == f16(np.log(np.float32(1e-45)))


def test_ios16_epsilon_must_have_the_dtype_of_x() -> None:
    b = Builder("ios16")
    x = b.input("x", FP16, [1, 2, 1, 1])
    for op in ("log", "rsqrt"):
        with pytest.raises(MILTypeError, match=r"epsilon has dtype fp32, but opset ios16"):
            getattr(b, op)(x, epsilon=np.float32(1e-3))
        getattr(b, op)(x, epsilon=np.float16(1e-3))
    ok = Builder("ios18")  # iOS17+ lets epsilon's dtype differ
    ok.log(ok.input("x", FP16, [1, 2, 1, 1]), epsilon=np.float32(1e-3))
    with pytest.raises(MILTypeError, match=r"epsilon must be a scalar"):
        ok.log(ok.input("y", FP16, [1, 2, 1, 1]), epsilon=np.ones(2, np.float16))


def test_ios16_parser_rejects_epsilon_of_another_dtype() -> None:
    b = Builder("ios16")
    x = b.input("x", FP16, [1, 2, 1, 1])
    b.returns(b.log(x, epsilon=np.float16(0.5)))
    text = print_program(b.program())
    parse_program(text)
    bad = text.replace("tensor<fp16, []> log_epsilon", "tensor<fp32, []> log_epsilon").replace(
        "val = tensor<fp16, []>(0.5)", "val = tensor<fp32, []>(0.5)"
    )
    assert bad != text
    with pytest.raises(MILTypeError, match=r"epsilon has dtype fp32"):
        parse_program(bad)


def test_integer_reduce_mean_truncates_the_exact_mean() -> None:
    b = Builder("ios18")
    x = b.input("x", FP32, [1, 3, 1, 2])
    ints = b.cast(x, "int32")
    mean = b.reduce_mean(ints, axes=[1], keep_dims=True)
    b.returns(b.cast(mean, "fp32"))
    xv = np.array([[2e9, -7], [2e9, 2], [2e9, 1]], np.float32)
    got = compile_sim(b)(xv)
    np.testing.assert_array_equal(got, [[2e9, -1]])  # no int32 overflow; -4/3 -> -1


@pytest.mark.parametrize("zp", [np.uint8(3), np.float32(2.5)])
def test_constexpr_zero_point_dtype_is_free(zp: np.generic) -> None:
    """coremltools allows an int8/uint8/fp32 zero point whatever the data's dtype."""
    data = np.arange(-4, 4, dtype=np.int8).reshape(1, 8, 1, 1)
    b = Builder("ios16")
    x = b.input("x", FP16, [1, 8, 1, 1])
    w = b.constexpr_affine_dequantize(data, zp, np.float16(0.5), 1)
    b.returns(b.add(x, w))
    got = compile_sim(b, runtime.get_chip("m1"))(np.zeros((8, 1)))
    want = (data.astype(np.float64) - float(zp)) * 0.5
    np.testing.assert_array_equal(got, want.reshape(8, 1))


def test_bool_mask_at_run_time_is_refreshed() -> None:
    """A bool mask computed at run time is turned into 0/-inf on every eval."""
    b = Builder("ios18")
    x = b.input("x", FP32, [1, 2, 4, 3])
    sel = b.slice_by_size(x, [0, 0, 0, 0], [1, 1, 4, 1])  # [1, 1, 4, 1]
    keys = b.reshape(sel, b.const([1, 1, 1, 4], dtype=INT32))  # one row of 4 keys
    mask = b.cast(keys, "bool")  # nonzero keeps the key
    b.returns(b.scaled_dot_product_attention(x, x, x, attn_mask=mask))
    assert mask.type.dtype is BOOL
    k = compile_sim(b, HONOURS_MASK)
    for keep in ([1, 0, 1, 1], [0, 1, 1, 0]):
        xv = XQ.copy()
        xv[0, 0, :, 0] = keep
        got = k(xv.reshape(2, 12)).reshape(1, 2, 4, 3)
        q = xv.astype(np.float64)
        scores = q @ q.swapaxes(-1, -2) / np.sqrt(3) + np.where(np.array(keep) != 0, 0, -np.inf)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        np.testing.assert_allclose(got, (p / p.sum(-1, keepdims=True)) @ q, rtol=1e-5, atol=1e-6)


def test_dilated_conv_needs_constant_weights() -> None:
    """Core ML has no dilated conv with run-time weights (coremltools rejects it)."""
    b = Builder("ios18")
    x = b.input("x", FP32, [1, 2, 1, 8])
    w = b.input("w", FP32, [2, 2, 1, 2])
    with pytest.raises(MILTypeError, match=r"dilations \[1, 2\] need constant weights"):
        b.conv(x, w, dilations=[1, 2])
    assert b.conv(x, w).type.shape == (1, 2, 1, 7)  # undilated: fine
    q = np.ones((2, 2, 1, 2), np.int8)
    deq = b.constexpr_affine_dequantize(q, np.int8(0), np.float32(0.5), 0)
    assert b.conv(x, deq, dilations=[1, 2]).type.shape == (1, 2, 1, 6)  # from constants


def test_matmul_and_conv_take_a_const_of_the_other_float_dtype_from_ios17() -> None:
    """coremltools' iOS17 matmul: dtypes may differ when exactly one operand is a const (the
    output takes the other's); its iOS17 conv: weight and bias may have either float dtype."""
    w = RNG.standard_normal((3, 2)).astype(np.float32)
    b = Builder("ios18")
    x = b.input("x", FP16, [1, 1, 4, 3])
    y = b.matmul(x, w)
    assert y.type.dtype is FP16
    b.returns(y)
    xv = f16(RNG.standard_normal((1, 12))).reshape(4, 3)
    got = compile_sim(b)(xv.reshape(1, 12)).reshape(4, 2)
    np.testing.assert_allclose(got, f16(xv @ w.astype(np.float64)), rtol=1e-3, atol=1e-3)
    with pytest.raises(MILTypeError, match=r"operand dtypes differ"):
        b.matmul(x, b.input("z", FP32, [1, 1, 3, 2]))  # neither is a const
    old = Builder("ios16")
    with pytest.raises(MILTypeError, match=r"operand dtypes differ"):
        old.matmul(old.input("x", FP16, [1, 1, 4, 3]), w)
    assert b.conv(x, np.ones((2, 1, 1, 1), np.float32)).type.dtype is FP16
