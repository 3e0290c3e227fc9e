"""The W8A8 probe program runs on the simulator: int8 weights from a BLOBFILE through
constexpr_affine_dequantize, int8 activations through quantize/dequantize."""

from __future__ import annotations

import numpy as np

from anetrain import runtime
from anetrain.kernels import probes
from anetrain.mil.blob import read_blob_file
from anetrain.mil.model import MILModel


def _weights(model: MILModel, count: int) -> list[np.ndarray]:
    blob = read_blob_file(model.weights["@model_path/weights/weight.bin"])
    return [blob.read(off, np.int8).astype(np.float64) for off in blob.offsets[:count]]


def test_int8_chain_matches_float64_reference() -> None:
    ch, sp = 32, 4
    model = probes.int8_chain(ch, sp, depth=2)
    x = np.random.default_rng(0).standard_normal((ch, sp * sp)).astype(np.float16)
    kernel = runtime.compile(model.program, model.weights, backend="sim")
    y = kernel(x.astype(np.float32).reshape(1, ch, sp, sp)).reshape(ch, sp * sp)
    w0, w1 = (w.reshape(ch, ch) * 0.125 for w in _weights(model, 2))
    h = (w0 @ x.astype(np.float64)).astype(np.float16).astype(np.float64)
    q = np.clip(np.round(h / 0.125), -128, 127)  # quantize: round half to even, saturate
    expected = w1 @ (q * 0.125)
    np.testing.assert_allclose(y, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
