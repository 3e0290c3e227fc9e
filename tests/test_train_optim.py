"""Optimizer, schedule and loss scaler against independent definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from anetrain.train.optim import AdamW, AdamWConfig, clip_by_global_norm, global_norm
from anetrain.train.scaler import LossScaler
from anetrain.train.schedule import CosineSchedule


def test_adamw_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    n = 3 * AdamW.CHUNK + 123  # several chunks and a ragged tail
    w0 = rng.standard_normal(n).astype(np.float32)
    mask = np.ones(n, bool)
    mask[100:5000] = False  # a norm-weight-like run without decay
    ours = AdamW(n, mask, AdamWConfig(weight_decay=0.1))
    w = w0.copy()
    tw_decay = torch.tensor(w0[mask], requires_grad=True)
    tw_plain = torch.tensor(w0[~mask], requires_grad=True)
    opt = torch.optim.AdamW(
        [{"params": [tw_decay], "weight_decay": 0.1}, {"params": [tw_plain], "weight_decay": 0.0}],
        lr=1e-2,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    for step in range(5):
        g = rng.standard_normal(n).astype(np.float32) * (step + 1)
        lr = 1e-2 * (1 - 0.1 * step)
        ours.step(w, g, lr)
        for group in opt.param_groups:
            group["lr"] = lr
        tw_decay.grad = torch.tensor(g[mask])
        tw_plain.grad = torch.tensor(g[~mask])
        opt.step()
    np.testing.assert_allclose(w[mask], tw_decay.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w[~mask], tw_plain.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert ours.t == 5


def test_adamw_state_round_trip_and_shape_check() -> None:
    a = AdamW(10, np.ones(10, bool))
    a.step(np.zeros(10, np.float32), np.ones(10, np.float32), 0.1)
    b = AdamW(10, np.ones(10, bool))
    b.load_state_dict(a.state_dict())
    assert b.t == 1 and np.array_equal(a.m, b.m) and np.array_equal(a.v, b.v)
    with pytest.raises(ValueError, match="moments"):
        AdamW(11, np.ones(11, bool)).load_state_dict(a.state_dict())


def test_global_norm_and_clipping() -> None:
    g = np.random.default_rng(1).standard_normal(3_000_001).astype(np.float32)
    expected = float(np.sqrt(np.sum(g.astype(np.float64) ** 2)))
    assert global_norm(g) == pytest.approx(expected, rel=1e-5)
    before = clip_by_global_norm(g, 1.0)
    assert before == pytest.approx(expected, rel=1e-5)
    assert global_norm(g) == pytest.approx(1.0, rel=1e-5)
    small = np.full(4, 0.1, np.float32)
    clip_by_global_norm(small, 1.0)
    assert np.all(small == np.float32(0.1))  # under the limit: untouched


def test_cosine_schedule() -> None:
    s = CosineSchedule(max_lr=1.0, total_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    assert s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.1 + 0.5 * (1 + math.cos(math.pi * 0.5)) * 0.9)
    assert s(110) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)
    lrs = [s(i) for i in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_static_scaler_counts_skips() -> None:
    sc = LossScaler(256.0)
    assert sc.update(True) and not sc.update(False)
    assert sc.scale == 256.0 and sc.skipped == 1


def test_dynamic_scaler_grows_and_backs_off() -> None:
    sc = LossScaler(1024.0, dynamic=True, growth_interval=3)
    for _ in range(3):
        assert sc.update(True)
    assert sc.scale == 2048.0
    assert not sc.update(False)
    assert sc.scale == 1024.0 and sc.skipped == 1 and sc.good_steps == 0
    restored = LossScaler()
    restored.load_state_dict(sc.state_dict())
    assert restored.state_dict() == sc.state_dict()


def test_adamw_fused_path_is_bit_identical_and_clips_inside_the_step() -> None:
    from anetrain.runtime.sim.fast import fast_available

    if not fast_available()[0]:
        pytest.skip("the fused AdamW needs numba (the 'fast' extra)")
    rng = np.random.default_rng(3)
    n = 2 * AdamW.CHUNK + 77
    mask = np.ones(n, bool)
    mask[10:900] = False
    mask[-50:] = False
    w0 = rng.standard_normal(n).astype(np.float32)
    fused, plain = AdamW(n, mask, fast=True), AdamW(n, mask, fast=False)
    reference = AdamW(n, mask, fast=False)
    w1, w2, w3 = w0.copy(), w0.copy(), w0.copy()
    for step in range(4):
        g = rng.standard_normal(n).astype(np.float32) * 10 ** (step - 2)
        g[::997] = 0.0
        factor = 0.37 if step % 2 else 1.0
        fused.step(w1, g, 1e-2, grad_scale=factor)
        plain.step(w2, g, 1e-2, grad_scale=factor)
        clipped = g * np.float32(factor)  # what clip_by_global_norm then step does
        reference.step(w3, clipped, 1e-2)
    for ours in (w1, w2):
        assert np.array_equal(ours.view(np.uint32), w3.view(np.uint32))
    assert np.array_equal(fused.m.view(np.uint32), reference.m.view(np.uint32))
    assert np.array_equal(fused.v.view(np.uint32), reference.v.view(np.uint32))


def test_all_finite_checks_every_chunk() -> None:
    from anetrain.train.optim import all_finite

    x = np.zeros(10_000, np.float32)
    assert all_finite(x, chunk=999)
    for bad in (np.inf, -np.inf, np.nan):
        y = x.copy()
        y[-1] = bad
        assert not all_finite(y, chunk=999)
