"""An independent PyTorch implementation of the model, the autograd oracle for gradients.

Written differently from anetrain on purpose: complex-number RoPE, ``repeat_interleave`` for
GQA, ``F.cross_entropy``. Tests import it after ``pytest.importorskip("torch")``.
"""

from __future__ import annotations

import torch

from anetrain.model import ModelConfig

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
