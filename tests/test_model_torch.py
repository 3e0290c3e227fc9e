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
F = torch.nn.functional


def torch_loss(cfg: ModelConfig, w: dict, tokens, targets):
    """Llama-style forward on torch tensors ``w`` (names as anetrain's Params)."""
    B, T = tokens.shape
    NH, KVH, HD, a = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.res_alpha

    def rms(x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.norm_eps) * g

    freqs = 1.0 / cfg.rope_base ** (torch.arange(0, HD, 2, dtype=torch.float64) / HD)
    rot = torch.polar(
        torch.ones(T, HD // 2, dtype=torch.float64), torch.outer(torch.arange(T), freqs)
    )

    def rope(x):  # x [B,T,heads,HD]; pairs (2i, 2i+1) as complex numbers
        xc = torch.view_as_complex(x.reshape(*x.shape[:-1], HD // 2, 2).contiguous())
        return torch.view_as_real(xc * rot[None, :, None, :]).reshape(x.shape)

    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    x = w["embed"][tokens]
    for i in range(cfg.n_layers):
        xn = rms(x, w["rms_att"][i])
        q = rope((xn @ w["wq"][i].T).view(B, T, NH, HD)).transpose(1, 2)
        k = rope((xn @ w["wk"][i].T).view(B, T, KVH, HD)).transpose(1, 2)
        v = (xn @ w["wv"][i].T).view(B, T, KVH, HD).transpose(1, 2)
        k = k.repeat_interleave(NH // KVH, dim=1)  # head h uses kv head h // ratio
        v = v.repeat_interleave(NH // KVH, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / HD**0.5 + mask, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, NH * HD)
        x = x + a * (o @ w["wo"][i].T)
        h = rms(x, w["rms_ffn"][i])
        x = x + a * ((F.silu(h @ w["w1"][i].T) * (h @ w["w3"][i].T)) @ w["w2"][i].T)
    logits = rms(x, w["rms_final"]) @ w["embed"].T
    return logits, F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1))


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
    torch.set_num_threads(1)  # never compete with OpenBLAS threads (feasibility.md §5)
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
