"""The NumPy reference model: gradients vs finite differences (float64), causality, GQA mapping,
KV-cache decode vs the full forward."""

from __future__ import annotations

import numpy as np
import pytest

from anetrain.model import ModelConfig, Params, init_params
from anetrain.model.reference import (
    KVCache,
    attention_forward,
    backward,
    forward,
    forward_step,
    prefill,
)

MICRO = ModelConfig(
    dim=16,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    hidden_dim=24,
    vocab_size=13,
    seq_len=8,
    residual_scaling=True,
)


def micro_params(cfg: ModelConfig = MICRO, seed: int = 0, dtype=np.float64) -> Params:
    """Init, then perturb everything (norm weights too, so w != 1 paths are exercised)."""
    p = init_params(cfg, seed).astype(dtype).copy()
    rng = np.random.default_rng(seed + 100)
    p.flat[:] += rng.normal(0, 0.05, p.flat.size)
    for name in ("rms_att", "rms_ffn", "rms_final"):
        p[name][...] = rng.uniform(0.5, 1.5, p[name].shape)
    return p


def batch(cfg: ModelConfig, B: int, T: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, cfg.vocab_size, (B, T + 1))
    return data[:, :-1], data[:, 1:]


@pytest.mark.parametrize("residual_scaling", [True, False])
def test_backward_matches_finite_differences(residual_scaling: bool) -> None:
    cfg = MICRO.replace(residual_scaling=residual_scaling)
    p = micro_params(cfg)
    x, y = batch(cfg, B=2, T=6)
    _, loss, cache = forward(p, x, y, dtype=np.float64)
    g = backward(p, cache)
    assert g.dtype == np.float64

    def f() -> float:
        return forward(p, x, y, dtype=np.float64)[1]

    rng = np.random.default_rng(7)
    h = 1e-6
    for name, t in p.items():
        flat_t = t.reshape(-1)
        for idx in rng.choice(flat_t.size, size=min(8, flat_t.size), replace=False):
            old = flat_t[idx]
            flat_t[idx] = old + h
            up = f()
            flat_t[idx] = old - h
            down = f()
            flat_t[idx] = old
            num = (up - down) / (2 * h)
            ana = g[name].reshape(-1)[idx]
            rel = abs(num - ana) / max(abs(num), abs(ana), 1e-6)
            assert rel < 1e-5, f"d{name}[{idx}]: analytic {ana:.10g} vs numeric {num:.10g}"
    # one directional derivative over the whole flat vector covers every entry at once
    u = rng.normal(size=p.flat.size)
    base = p.flat.copy()
    p.flat[:] = base + h * u
    up = f()
    p.flat[:] = base - h * u
    down = f()
    p.flat[:] = base
    assert (up - down) / (2 * h) == pytest.approx(float(g.flat @ u), rel=1e-6)
    assert f() == loss


def test_float32_backward_close_to_float64() -> None:
    p64 = micro_params()
    p32 = p64.astype(np.float32)
    x, y = batch(MICRO, 2, 8)
    _, l64, c64 = forward(p64, x, y, dtype=np.float64)
    logits32, l32, c32 = forward(p32, x, y)
    assert logits32.dtype == np.float32 and l32 == pytest.approx(l64, rel=1e-5)
    g64, g32 = backward(p64, c64), backward(p32, c32)
    assert g32.dtype == np.float32
    for name in g64:
        scale = np.abs(g64[name]).max()
        assert np.abs(g32[name] - g64[name]).max() <= 1e-4 * scale + 1e-7, name


def test_dloss_scales_gradients() -> None:
    p = micro_params()
    x, y = batch(MICRO, 1, 8)
    _, _, c = forward(p, x, y, dtype=np.float64)
    np.testing.assert_allclose(backward(p, c, dloss=256.0).flat, 256.0 * backward(p, c).flat)


def test_initial_loss_is_near_log_vocab() -> None:
    from anetrain.model import preset

    cfg = preset("tiny").replace(seq_len=16)
    x, y = batch(cfg, 2, 16)
    _, loss, _ = forward(init_params(cfg, 0), x, y)
    assert abs(loss - np.log(cfg.vocab_size)) < 0.1


def test_attention_is_causal() -> None:
    p = micro_params()
    x, _ = batch(MICRO, 2, 8)
    logits, _, _ = forward(p, x, dtype=np.float64)
    t = 4
    x2 = x.copy()
    x2[:, t + 1 :] = (x2[:, t + 1 :] + 5) % MICRO.vocab_size
    logits2, _, _ = forward(p, x2, dtype=np.float64)
    np.testing.assert_allclose(logits2[:, : t + 1], logits[:, : t + 1], rtol=0, atol=1e-12)
    assert not np.allclose(logits2[:, t + 1 :], logits[:, t + 1 :])


def test_gqa_query_head_h_reads_kv_head_h_div_ratio() -> None:
    rng = np.random.default_rng(0)
    B, NH, KVH, T, HD = 2, 6, 2, 5, 4
    R = NH // KVH
    q = rng.normal(size=(B, NH, T, HD))
    k = rng.normal(size=(B, KVH, T, HD))
    v = rng.normal(size=(B, KVH, T, HD))
    out, att = attention_forward(q, k, v)

    def naive(kv_of):
        res = np.empty_like(q)
        for h in range(NH):
            s = q[:, h] @ k[:, kv_of(h)].swapaxes(-1, -2) / np.sqrt(HD)  # [B,T,T]
            s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
            w = np.exp(s - s.max(-1, keepdims=True))
            res[:, h] = (w / w.sum(-1, keepdims=True)) @ v[:, kv_of(h)]
        return res

    np.testing.assert_allclose(out, naive(lambda h: h // R), atol=1e-12)
    # the maderix forward-kernel pairing (h % KVH) is a different function
    assert not np.allclose(out, naive(lambda h: h % KVH))
    np.testing.assert_allclose(att.sum(-1), 1.0)
    assert np.all(np.triu(att, k=1) == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kv_cache_decode_equals_full_forward(dtype) -> None:
    cfg = MICRO.replace(seq_len=10)
    p = micro_params(cfg, dtype=dtype)
    x, _ = batch(cfg, 1, 10)
    logits, _, _ = forward(p, x, dtype=dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    kv = KVCache.empty(cfg, dtype=dtype)
    for pos, tok in enumerate(x[0]):
        step = forward_step(p, int(tok), pos, kv)
        assert step.dtype == dtype
        np.testing.assert_allclose(step, logits[0, pos], rtol=tol, atol=tol)
    # prefill (batched) + decode equals the same
    kv2 = KVCache.empty(cfg, dtype=dtype)
    last = prefill(p, x[0, :6], kv2)
    np.testing.assert_allclose(last, logits[0, 5], rtol=tol, atol=tol)
    np.testing.assert_allclose(kv2.k[:, :, :6], kv.k[:, :, :6], rtol=tol, atol=tol)
    np.testing.assert_allclose(
        forward_step(p, int(x[0, 6]), 6, kv2), logits[0, 6], rtol=tol, atol=tol
    )


def test_forward_step_rejects_bad_positions() -> None:
    p = micro_params()
    kv = KVCache.empty(MICRO)
    with pytest.raises(ValueError, match="skips positions"):
        forward_step(p, 1, 3, kv)
    with pytest.raises(ValueError, match="outside the KV cache"):
        forward_step(p, 1, MICRO.seq_len, kv)
    with pytest.raises(ValueError, match="outside vocab"):
        forward_step(p, MICRO.vocab_size, 0, kv)


def test_forward_validates_inputs() -> None:
    p = micro_params()
    with pytest.raises(ValueError, match="2-D integer"):
        forward(p, np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match=r"ids must be in \[0, 13\)"):
        forward(p, np.full((1, 4), 13))
    _, loss, cache = forward(p, np.zeros((1, 4), dtype=np.int64))
    assert loss is None
    with pytest.raises(ValueError, match="targets"):
        backward(p, cache)
