"""The NumPy reference against an independent PyTorch implementation, graded by autograd.

The torch model is written differently on purpose: complex-number RoPE, ``repeat_interleave``
for GQA, ``F.cross_entropy``. Compared in float64: logits, loss and every parameter gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

from anetrain.model import ModelConfig, Params
from anetrain.model.reference import backward, forward

torch = pytest.importorskip("torch")

from torch_model import torch_loss  # noqa: E402

CONFIGS = {
    "gqa+alpha": ModelConfig(
        dim=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        hidden_dim=40,
        vocab_size=17,
        residual_scaling=True,
    ),
    "mha": ModelConfig(dim=24, n_layers=3, n_heads=3, hidden_dim=64, vocab_size=11),
    "explicit-head-dim": ModelConfig(
        dim=16, n_layers=1, n_heads=4, n_kv_heads=1, head_dim=6, hidden_dim=20, vocab_size=9
    ),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_torch_autograd(name: str) -> None:
    torch.set_num_threads(1)  # never compete with OpenBLAS threads on a 2-core CI machine
    cfg = CONFIGS[name]
    rng = np.random.default_rng(3)
    p = Params(cfg, rng.normal(0, 0.3, cfg.n_params))
    for n in ("rms_att", "rms_ffn", "rms_final"):
        p[n][...] = rng.uniform(0.5, 1.5, p[n].shape)
    data = rng.integers(0, cfg.vocab_size, (3, 10))
    x, y = data[:, :-1], data[:, 1:]

    logits, loss, cache = forward(p, x, y, dtype=np.float64)
    grads = backward(p, cache)

    w = {n: torch.tensor(t, requires_grad=True) for n, t in p.items()}
    t_logits, t_loss = torch_loss(cfg, w, torch.tensor(x), torch.tensor(y))
    t_loss.backward()

    np.testing.assert_allclose(logits, t_logits.detach().numpy(), rtol=1e-10, atol=1e-10)
    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    for n in p:
        ref = w[n].grad.numpy()
        err = np.abs(grads[n] - ref).max()
        assert err <= 1e-10 * max(np.abs(ref).max(), 1e-3), f"d{n}: maxdiff {err:.3e}"
