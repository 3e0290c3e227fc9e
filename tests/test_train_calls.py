"""The call helper (train/calls.py) that every pipeline kernel evaluation goes through: named
writes, surface-to-surface taps, weight staging from the spec, per-binding output surfaces."""

from __future__ import annotations

import numpy as np
import pytest

from anetrain import runtime
from anetrain.kernels.dynamic import Dims, build_kernels
from anetrain.model.config import ModelConfig
from anetrain.model.params import init_params
from anetrain.train.calls import BoundKernel, PhaseTimer

CFG = ModelConfig(
    dim=16, n_layers=2, n_heads=2, n_kv_heads=2, hidden_dim=32, vocab_size=8, seq_len=8
)
D = Dims.from_config(CFG)


@pytest.fixture(scope="module")
def parts():
    specs = build_kernels(D)
    be = runtime.get_backend("sim")
    kernels = {
        n: be.compile(specs[n].model.program, specs[n].model.weights)
        for n in ("wo_fwd", "ffn_bwd_w2t")
    }
    return specs, kernels


def f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float64)


def test_bindings_with_own_outputs_keep_each_layers_result(parts) -> None:
    """A static pipeline keeps each layer's taps in its own output surface: evaluating layer 1
    must not overwrite layer 0's outputs, and staging writes each layer's own parameter."""
    specs, kernels = parts
    timer = PhaseTimer(("io", "kernels"))
    wo = BoundKernel(specs["wo_fwd"], kernels["wo_fwd"], timer, CFG.n_layers, own_outputs=True)
    params = init_params(CFG, seed=1)
    wo.stage(params)
    rng = np.random.default_rng(0)
    attn = [rng.standard_normal((D.q_dim, D.seq)).astype(np.float32) for _ in range(2)]
    outs = [wo(layer, attn=attn[layer]) for layer in range(2)]
    for layer in range(2):
        want = f16(params["wo"][layer]) @ f16(attn[layer])
        np.testing.assert_allclose(outs[layer]["o"], want, rtol=2e-2, atol=2e-2)
    assert outs[0].surface is not outs[1].surface
    ms = timer.take()
    assert ms["io"] > 0 and ms["kernels"] > 0


def test_a_tap_is_copied_surface_to_surface_and_checked(parts) -> None:
    specs, kernels = parts
    timer = PhaseTimer(("io", "kernels"))
    wo = BoundKernel(specs["wo_fwd"], kernels["wo_fwd"], timer, 1)
    w2t = BoundKernel(specs["ffn_bwd_w2t"], kernels["ffn_bwd_w2t"], timer, 1)
    params = init_params(CFG, seed=2)
    wo.stage(params)
    w2t.stage(params)
    attn = np.random.default_rng(1).standard_normal((D.q_dim, D.seq)).astype(np.float32)
    o = wo(0, attn=attn)
    direct = w2t(0, dffn=o["o"])["dgate"].copy()
    tapped = w2t(0, dffn=o.tap("o"))["dgate"]
    np.testing.assert_array_equal(tapped, direct)  # the copy moves the same fp16 bits
    dgate = w2t(0, dffn=o.tap("o")).tap("dgate")  # [H, S]: does not fit attn [QD, S]
    with pytest.raises(ValueError, match="cannot copy"):
        wo(0, attn=dgate)
    with pytest.raises(KeyError, match="no region"):
        wo(0, nonsense=attn)
