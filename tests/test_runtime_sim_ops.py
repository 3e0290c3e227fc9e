"""Simulator op semantics: every registry op against float64 NumPy plus fp16 rounding."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import numpy as np
import pytest

from anetrain import runtime
from anetrain.mil import FP16, FP32, INT8, UINT8, Builder, Var, print_program
from anetrain.mil.ops import REGISTRY
from anetrain.mil.types import INT32
from anetrain.runtime.sim.ops import PLANNERS
from anetrain.runtime.testing import Weights, f16

RNG = np.random.default_rng(7)
MULTI = dataclasses.replace(runtime.get_chip("m4"), multi_input_allowed=True)


def run(
    build: Callable[[Builder], list[Var]],
    inputs: dict[str, np.ndarray],
    *,
    dtype=FP16,
    weights: Callable[[Builder], dict] | None = None,
    **options,
) -> list[np.ndarray]:
    """Build a program from ``build(b)`` with one input per ``inputs`` entry, run it on sim."""
    b = Builder("ios18")
    b.vars = {name: b.input(name, dtype, arr.shape) for name, arr in inputs.items()}  # type: ignore[attr-defined]
    outs = build(b)
    shapes = [o.shape for o in outs]
    flat = [  # surfaces are [1, C, H, W]: flatten other ranks, restore them after
        o if o.type.rank == 4 else b.reshape(o, b.const([1, 1, 1, o.type.numel], dtype=INT32))
        for o in outs
    ]
    b.returns(*flat)
    blobs = weights(b) if weights else None
    kernel = runtime.compile(b.program(), blobs, backend="sim", chip=MULTI, **options)
    result = kernel(*inputs.values())
    results = list(result) if isinstance(result, tuple) else [result]
    return [r.reshape(shape) for r, shape in zip(results, shapes, strict=True)]


def x4(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def as16(x: np.ndarray) -> np.ndarray:
    """float64 -> fp16 -> float64: the expected value of an fp16 op output."""
    with np.errstate(over="ignore"):
        return np.asarray(x, np.float64).astype(np.float16).astype(np.float64)


def test_every_registry_op_has_a_planner() -> None:
    assert set(REGISTRY) - {"const"} <= set(PLANNERS)


@pytest.mark.parametrize(
    "op,fn",
    [
        ("add", np.add),
        ("sub", np.subtract),
        ("mul", np.multiply),
        ("real_div", np.divide),
    ],
)
def test_binary_ops_are_correctly_rounded(op: str, fn) -> None:
    x, y = x4(1, 8, 1, 16), x4(1, 8, 1, 1)
    (got,) = run(lambda b: [getattr(b, op)(b.vars["x"], b.vars["y"])], {"x": x, "y": y})
    assert np.array_equal(got, as16(fn(f16(x), f16(y))))


def test_pow_with_constant_exponent() -> None:
    x = np.abs(x4(1, 4, 1, 8)) + 0.1
    (got,) = run(lambda b: [b.pow(b.vars["x"], np.float16(-0.5))], {"x": x})
    np.testing.assert_allclose(got, as16(f16(x) ** -0.5), rtol=1e-3)


UNARY = {
    "exp": np.exp,
    "sqrt": np.sqrt,
    "tanh": np.tanh,
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "silu": lambda v: v / (1 + np.exp(-v)),
    "log": lambda v: np.log(v + 1e-45),
    "rsqrt": lambda v: 1 / np.sqrt(v + 1e-12),
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_ops(op: str) -> None:
    x = x4(1, 4, 1, 32)
    if op in ("sqrt", "log", "rsqrt"):
        x = np.abs(x) + 0.01
    (got,) = run(lambda b: [getattr(b, op)(b.vars["x"])], {"x": x})
    np.testing.assert_allclose(got, as16(UNARY[op](f16(x))), rtol=1e-3, atol=1e-7)


def test_log_and_rsqrt_epsilon() -> None:
    x = np.zeros((1, 1, 1, 4), np.float32)
    got = run(
        lambda b: [b.log(b.vars["x"], np.float16(0.5)), b.rsqrt(b.vars["x"], np.float16(0.25))],
        {"x": x},
    )
    np.testing.assert_allclose(got[0], np.log(0.5), rtol=1e-3)
    np.testing.assert_allclose(got[1], 2.0)


@pytest.mark.parametrize("axis", [1, -1, 3])
def test_softmax_axes(axis: int) -> None:
    x = x4(1, 6, 1, 10, scale=4)
    (got,) = run(lambda b: [b.softmax(b.vars["x"], axis=axis)], {"x": x})
    e = np.exp(f16(x) - f16(x).max(axis=axis, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(axis=axis, keepdims=True), rtol=2e-3, atol=1e-6)


def test_softmax_is_max_shifted() -> None:
    x = np.full((1, 4, 1, 2), 60000.0, np.float32)  # exp(60000) overflows without the shift
    (got,) = run(lambda b: [b.softmax(b.vars["x"], axis=1)], {"x": x})
    assert np.array_equal(got, np.full_like(got, 0.25))


@pytest.mark.parametrize(
    "op,fn", [("reduce_sum", np.sum), ("reduce_mean", np.mean), ("reduce_max", np.max)]
)
@pytest.mark.parametrize("axes,keep", [([1], True), ([1, 3], False), (None, False)])
def test_reductions(op: str, fn, axes, keep: bool) -> None:
    x = x4(1, 5, 2, 7)
    (got,) = run(
        lambda b: (
            [getattr(b, op)(b.vars["x"], axes, keep)]
            if axes
            else [getattr(b, op)(b.vars["x"], keep_dims=keep)]
        ),
        {"x": x},
    )
    want = fn(f16(x), axis=None if axes is None else tuple(axes), keepdims=keep)
    np.testing.assert_allclose(got, as16(want), rtol=2e-3, atol=2e-3)


def test_reduce_sum_accumulates_in_fp32() -> None:
    """4096 x 1.0 + 1 x 1.0: an fp16 running sum would stall at 2048."""
    x = np.ones((1, 4096, 1, 1), np.float32)
    (got,) = run(lambda b: [b.reduce_sum(b.vars["x"], [1], False)], {"x": x})
    assert got.ravel()[0] == 4096.0


def test_shape_ops() -> None:
    x = x4(1, 6, 4, 8)
    outs = run(
        lambda b: [
            b.reshape(b.vars["x"], b.const([1, 2, 12, 8], dtype=INT32)),
            b.transpose(b.vars["x"], b.const([0, 3, 2, 1], dtype=INT32)),
            b.slice_by_size(
                b.vars["x"],
                b.const([0, 2, 1, -3], dtype=INT32),
                b.const([1, 3, -1, 2], dtype=INT32),
            ),
            b.slice_by_index(
                b.vars["x"],
                b.const([0, 1, 0, 7], dtype=INT32),
                b.const([1, 6, 4, 0], dtype=INT32),
                b.const([1, 2, 1, -2], dtype=INT32),
                b.const([False, False, True, False]),
                b.const([False, False, True, False]),
                b.const([True, False, False, False]),
            ),
        ],
        {"x": x},
    )
    xv = f16(x)
    assert np.array_equal(outs[0], xv.reshape(1, 2, 12, 8))
    assert np.array_equal(outs[1], xv.transpose(0, 3, 2, 1))
    assert np.array_equal(outs[2], xv[:, 2:5, 1:, 5:7])
    assert np.array_equal(outs[3], xv[0, 1:6:2, :, 7:0:-2])


def test_reshape_of_transposed_view_copies_each_eval() -> None:
    x = x4(1, 4, 1, 6)
    b = Builder("ios18")
    xin = b.input("x", FP16, [1, 4, 1, 6])
    t = b.transpose(xin, b.const([0, 3, 2, 1], dtype=INT32))
    b.returns(b.reshape(t, b.const([1, 24, 1, 1], dtype=INT32)))
    k = runtime.compile(b.program(), backend="sim")
    for scale in (1.0, -2.0):
        got = k(x * scale)
        assert np.array_equal(got.ravel(), f16(x * scale).transpose(0, 3, 2, 1).ravel())


def test_concat_and_interleave() -> None:
    a, c = x4(1, 2, 1, 3), x4(1, 2, 1, 3)
    outs = run(
        lambda b: [
            b.concat([b.vars["a"], b.vars["c"]], 1),
            b.concat([b.vars["a"], b.vars["c"]], 1, True),
        ],
        {"a": a, "c": c},
    )
    av, cv = f16(a), f16(c)
    assert np.array_equal(outs[0], np.concatenate([av, cv], axis=1))
    # coremltools: interleave alternates slices of the values along the axis
    assert np.array_equal(
        outs[1][0, :, 0], np.stack([av[0, 0, 0], cv[0, 0, 0], av[0, 1, 0], cv[0, 1, 0]])
    )


def test_matmul_transposes_and_batch_broadcast() -> None:
    x, y = x4(1, 3, 8, 5), x4(1, 1, 4, 8)
    outs = run(
        lambda b: [
            b.matmul(b.vars["x"], b.vars["y"], True, True),
            b.matmul(b.vars["y"], b.vars["x"]),
        ],
        {"x": x, "y": y},
    )
    xv, yv = f16(x), f16(y)
    np.testing.assert_allclose(
        outs[0], as16(xv.swapaxes(-1, -2) @ yv.swapaxes(-1, -2)), rtol=2e-3, atol=2e-3
    )
    np.testing.assert_allclose(outs[1], as16(yv @ xv), rtol=2e-3, atol=2e-3)


def naive_conv(x, w, bias, stride, pad, dil, groups):
    n, _, h, wd = x.shape
    co, cig, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[1]), (pad[2], pad[3])))
    ho = (h + pad[0] + pad[1] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd + pad[2] + pad[3] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, co, ho, wo))
    cog = co // groups
    for o, i, j in itertools.product(range(co), range(ho), range(wo)):
        g = o // cog
        patch = xp[
            0,
            g * cig : (g + 1) * cig,
            i * stride[0] : i * stride[0] + dil[0] * kh : dil[0],
            j * stride[1] : j * stride[1] + dil[1] * kw : dil[1],
        ]
        out[0, o, i, j] = (patch * w[o]).sum() + (bias[o] if bias is not None else 0)
    return out


@pytest.mark.parametrize(
    "stride,pad,dil,groups",
    [
        ((1, 1), (1, 1, 1, 1), (1, 1), 1),
        ((2, 1), (0, 2, 1, 0), (2, 1), 2),
        ((1, 2), (0, 0, 0, 0), (1, 1), 4),
    ],
)
def test_general_conv(stride, pad, dil, groups) -> None:
    x = x4(1, 4, 7, 9)
    w = (RNG.standard_normal((8, 4 // groups, 3, 2)) * 0.3).astype(np.float16)
    bias = (RNG.standard_normal(8) * 0.1).astype(np.float16)

    def build(b: Builder) -> list[Var]:
        wts = Weights(b)
        b.wts = wts  # type: ignore[attr-defined]
        return [
            b.conv(
                b.vars["x"],
                wts.add("W", w),
                wts.add("bias", bias),
                list(stride),
                "custom",
                list(pad),
                list(dil),
                groups,
            )
        ]

    (got,) = run(build, {"x": x}, weights=lambda b: b.wts.blobs())
    want = naive_conv(
        f16(x), w.astype(np.float64), bias.astype(np.float64), stride, pad, dil, groups
    )
    np.testing.assert_allclose(got, want, rtol=5e-3, atol=5e-3)


def test_conv_same_padding_and_pointwise_bias() -> None:
    x = x4(1, 3, 5, 5)
    w = (RNG.standard_normal((2, 3, 3, 3)) * 0.3).astype(np.float16)
    w1 = (RNG.standard_normal((2, 3, 1, 1)) * 0.3).astype(np.float16)
    bias = np.array([0.5, -1.0], np.float16)

    def build(b: Builder) -> list[Var]:
        b.wts = Weights(b)  # type: ignore[attr-defined]
        return [
            b.conv(b.vars["x"], b.wts.add("W", w), pad_type="same"),
            b.conv(b.vars["x"], b.wts.add("W1", w1), b.wts.add("bias", bias)),
        ]

    outs = run(build, {"x": x}, weights=lambda b: b.wts.blobs())
    xv = f16(x)
    want = naive_conv(xv, w.astype(np.float64), None, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    np.testing.assert_allclose(outs[0], want, rtol=5e-3, atol=5e-3)
    want1 = np.einsum("oi,nihw->nohw", w1[:, :, 0, 0].astype(np.float64), xv) + bias.reshape(
        1, 2, 1, 1
    )
    np.testing.assert_allclose(outs[1], want1, rtol=5e-3, atol=5e-3)


def test_sdpa_matches_reference_and_ignores_mask_per_profile() -> None:
    q, k, v = x4(1, 2, 6, 8), x4(1, 2, 5, 8), x4(1, 2, 5, 3)
    mask = np.full((1, 1, 6, 5), -65504.0, np.float16)

    def build(b: Builder) -> list[Var]:
        m = b.const(mask)
        return [b.scaled_dot_product_attention(b.vars["q"], b.vars["k"], b.vars["v"], m)]

    (got,) = run(build, {"q": q, "k": k, "v": v})
    s = f16(q) @ f16(k).swapaxes(-1, -2) / np.sqrt(8)
    e = np.exp(s - s.max(-1, keepdims=True))
    want = (e / e.sum(-1, keepdims=True)) @ f16(v)
    np.testing.assert_allclose(got, want, rtol=5e-3, atol=5e-3)
    honest = dataclasses.replace(MULTI, sdpa_ignores_mask=False)
    b = Builder("ios18")
    ins = [b.input(n, FP16, a.shape) for n, a in (("q", q), ("k", k), ("v", v))]
    b.returns(b.scaled_dot_product_attention(*ins, b.const(np.zeros_like(mask))))
    kern = runtime.compile(b.program(), backend="sim", chip=honest)
    np.testing.assert_allclose(kern(q, k, v), want, rtol=5e-3, atol=5e-3)


def test_constexpr_affine_dequantize_per_channel() -> None:
    q = RNG.integers(-128, 128, (4, 3, 1, 1)).astype(np.int8)
    zp = np.array([0, 1, -2, 3], np.int8)
    scale = np.array([0.5, 0.25, 0.125, 1.0], np.float16)
    x = x4(1, 3, 1, 2)

    def build(b: Builder) -> list[Var]:
        w = b.constexpr_affine_dequantize(q, zp, scale, 0, name="w")
        return [b.conv(b.vars["x"], w)]

    (got,) = run(build, {"x": x})
    wd = (q.astype(np.float64) - zp.reshape(4, 1, 1, 1)) * scale.astype(np.float64).reshape(
        4, 1, 1, 1
    )
    np.testing.assert_allclose(got[0, :, 0], as16(wd[:, :, 0, 0] @ f16(x)[0, :, 0]), rtol=2e-3)


def test_quantize_rounds_half_even_and_saturates() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 300.0, -300.0, 3.0], np.float32).reshape(1, 1, 1, 8)
    outs = run(
        lambda b: [
            b.dequantize(
                b.quantize(b.vars["x"], None, np.float16(1.0), None, "int8"), None, np.float16(1.0)
            ),
            b.dequantize(
                b.quantize(b.vars["x"], np.uint8(128), np.float16(2.0), None, "uint8"),
                np.uint8(128),
                np.float16(2.0),
            ),
        ],
        {"x": x},
    )
    assert outs[0].ravel().tolist() == [0, 2, 2, -0.0, -2, 127, -128, 3]
    # x/2 + 128: 128.25, 128.75, 129.25, 127.75, 127.25, 278 -> 255, -22 -> 0, 129.5 -> 130
    assert outs[1].ravel().tolist() == [0, 2, 2, 0, -2, 254, -256, 4]


def test_quantize_per_channel_axis() -> None:
    x = np.array([[1.0, -1.0], [4.0, -4.0]], np.float32).reshape(1, 2, 1, 2)
    scale = np.array([0.5, 2.0], np.float16)
    (got,) = run(
        lambda b: [b.dequantize(b.quantize(b.vars["x"], None, scale, 1, "int8"), None, scale, 1)],
        {"x": x},
    )
    assert np.array_equal(got, x)


def test_cast_between_float_types() -> None:
    x = np.array([1.0001, 65520.0, 2.0**-25 * 3, 7.7], np.float32).reshape(1, 1, 1, 4)
    outs = run(
        lambda b: [
            b.cast(b.vars["x"], "fp16"),
            b.cast(b.cast(b.vars["x"], "fp16"), "fp32"),
            b.cast(b.cast(b.vars["x"], "int32"), "fp32"),
        ],
        {"x": x},
        dtype=FP32,
    )
    assert np.array_equal(outs[0].ravel(), as16(x.ravel()))
    assert np.array_equal(outs[1].ravel(), as16(x.ravel()))
    assert outs[2].ravel().tolist() == [1.0, 65520.0, 0.0, 7.0]


def test_fp32_tensors_are_not_rounded() -> None:
    x = np.ones((1, 1, 1, 4), np.float32)
    (got,) = run(lambda b: [b.add(b.vars["x"], np.float32(1e-4))], {"x": x}, dtype=FP32)
    assert np.all(got == np.float32(1.0001))
    (got16,) = run(lambda b: [b.add(b.vars["x"], np.float16(1e-4))], {"x": x})
    assert np.all(got16 == 1.0)


def test_flush_to_zero_option_and_profile_flag() -> None:
    x = np.full((1, 1, 1, 4), 2.0**-10, np.float32)

    def build(b: Builder) -> list[Var]:
        return [b.mul(b.vars["x"], np.float16(2.0**-10))]

    (kept,) = run(build, {"x": x})
    assert np.all(kept == 2.0**-20)
    (flushed,) = run(build, {"x": x}, flush_subnormals=True)
    assert np.all(flushed == 0.0)
    ftz_chip = dataclasses.replace(MULTI, flush_subnormals=True)
    b = Builder("ios18")
    b.returns(b.mul(b.input("x", FP16, [1, 1, 1, 4]), np.float16(2.0**-10)))
    assert np.all(runtime.compile(b.program(), backend="sim", chip=ftz_chip)(x) == 0.0)


def test_text_and_program_compile_identically() -> None:
    from anetrain.kernels.dyn_matmul import dyn_matmul_program

    ic, oc, seq = 16, 24, 8
    prog = dyn_matmul_program(ic, oc, seq)
    act = x4(ic, seq)
    w = x4(ic, oc)
    packed = np.concatenate([act, w], axis=1)
    y_prog = runtime.compile(prog, backend="sim")(packed)
    y_text = runtime.compile(print_program(prog), backend="sim")(packed)
    assert np.array_equal(y_prog, y_text)
    np.testing.assert_allclose(y_prog.reshape(oc, seq), f16(w).T @ f16(act), rtol=5e-3, atol=5e-3)


def test_constant_subgraphs_are_folded_at_compile() -> None:
    b = Builder("ios18")
    x = b.input("x", FP16, [1, 4, 1, 2])
    w = b.constexpr_affine_dequantize(
        np.ones((4, 4, 1, 1), np.int8), np.int8(0), np.float16(0.5), 0
    )
    w2 = b.mul(w, np.float16(2.0))  # const * const: folded too
    b.returns(b.conv(x, w2))
    k = runtime.compile(b.program(), backend="sim")
    assert len(k.plan.steps) == 1
    assert np.array_equal(k(np.ones((4, 2), np.float32)), np.full((1, 4, 1, 2), 4.0))


def test_int8_io_not_allowed_but_int_ops_work_inside() -> None:
    b = Builder("ios18")
    x = b.input("x", FP16, [1, 2, 1, 2])
    q = b.quantize(x, None, np.float16(1.0), None, "int8")
    b.returns(b.dequantize(q, None, np.float16(0.5)))
    k = runtime.compile(b.program(), backend="sim")
    assert np.array_equal(k(np.array([[1, 2], [3, 4]], np.float32)).ravel(), [0.5, 1, 1.5, 2])
    assert INT8 != UINT8


@pytest.mark.parametrize("fast", [False, True], ids=["numpy", "fast"])
def test_silu_of_infinities_is_its_limit(fast: bool) -> None:
    """silu(-inf) is -0.0 (the limit x * sigmoid(x) takes from below), not -inf / inf = NaN;
    silu(+inf) = +inf and NaN stays NaN, on both the NumPy and the numba path."""
    from anetrain.runtime.opcheck.oracle import _silu
    from anetrain.runtime.sim.fast import fast_available

    if fast and not fast_available()[0]:
        pytest.skip("the fast path needs numba (the 'fast' extra)")
    x = np.array([-np.inf, -60000.0, -20.0, 0.0, np.inf, np.nan] * 2, np.float32).reshape(
        1, 1, 1, 12
    )
    (got,) = run(lambda b: [b.silu(b.vars["x"])], {"x": x}, fast=fast)
    with np.errstate(all="raise"):  # the float64 reference has no invalid operation
        want = _silu(x)
    for values in (got.reshape(-1)[:6], want.reshape(-1)[:6]):
        assert values[0] == 0 and np.signbit(values[0]), values
        assert values[1] == 0 and np.signbit(values[1]), values
        assert values[4] == np.inf and np.isnan(values[5]), values
