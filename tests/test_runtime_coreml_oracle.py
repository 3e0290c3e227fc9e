"""Cross-check simulator ops against coremltools' own value inference (an independent oracle)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from anetrain import runtime
from anetrain.mil import FP16, FP32, Builder
from anetrain.mil.types import INT32

ct = pytest.importorskip("coremltools")
mb = pytest.importorskip("coremltools.converters.mil").Builder

MULTI = dataclasses.replace(runtime.get_chip("m4"), multi_input_allowed=True)


def coreml_value(make) -> np.ndarray:
    """Evaluate ``make()`` (mb ops on constant inputs) through coremltools' value inference."""
    box: dict[str, np.ndarray] = {}

    @mb.program(input_specs=[mb.TensorSpec(shape=(1,))], opset_version=ct.target.iOS18)
    def prog(x):
        var = make()
        box["v"] = var.val if var.val is not None else var.op.materialized_val_inference()
        return x

    assert prog is not None and box["v"] is not None
    return np.asarray(box["v"])


def sim_value(build, x: np.ndarray, dtype=FP32) -> np.ndarray:
    b = Builder("ios18")
    xin = b.input("x", dtype, [1, *x.shape[1:]])
    out = build(b, xin)
    flat = b.reshape(out, b.const([1, 1, 1, out.type.numel], dtype=INT32))
    b.returns(flat)
    k = runtime.compile(b.program(), backend="sim", chip=MULTI)
    return k(x.reshape(x.shape[1], -1)).reshape(out.shape)


@pytest.mark.parametrize(("dtype", "zp"), [("int8", np.int8(1)), ("uint8", np.uint8(127))])
def test_quantize_matches_coremltools(dtype: str, zp: np.generic) -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, 300.0, -3.5, 7.25, -300.0], np.float32).reshape(1, 2, 1, 4)
    scale = np.float32(0.5)
    want = coreml_value(
        lambda: mb.quantize(input=x, scale=scale, zero_point=zp, output_dtype=dtype)
    )
    got = sim_value(
        lambda b, v: b.dequantize(b.quantize(v, zp, scale, None, dtype), zp, np.float32(1.0)),
        x,
    )
    assert np.array_equal(got, want.astype(np.float32) - float(zp))


def test_per_channel_affine_dequantize_matches_coremltools() -> None:
    q = np.arange(-8, 8, dtype=np.int8).reshape(1, 4, 1, 4)
    scale = np.array([0.5, 0.25, 2.0, 1.0], np.float32)
    zp = np.array([0, 1, -2, 3], np.int8)
    want = coreml_value(
        lambda: mb.constexpr_affine_dequantize(quantized_data=q, zero_point=zp, scale=scale, axis=1)
    )
    got = sim_value(
        lambda b, v: b.add(v, b.constexpr_affine_dequantize(q, zp, scale, 1)),
        np.zeros((1, 4, 1, 4), np.float32),
    )
    assert np.array_equal(got, want)


def test_softmax_and_matmul_match_coremltools() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(-4, 4, (1, 8, 1, 6)).astype(np.float32)
    y = rng.standard_normal((1, 1, 6, 5)).astype(np.float32)
    want = coreml_value(lambda: mb.matmul(x=mb.softmax(x=x, axis=1), y=y))
    got = sim_value(lambda b, v: b.matmul(b.softmax(v, axis=1), y), x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    want16 = coreml_value(lambda: mb.softmax(x=x.astype(np.float16), axis=1))
    got16 = sim_value(lambda b, v: b.softmax(v, axis=1), x, dtype=FP16)
    np.testing.assert_allclose(got16, want16.astype(np.float32), rtol=2e-3, atol=1e-4)
