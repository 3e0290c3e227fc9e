"""The NumPy reference model: the one place the math lives, as forward/backward pairs.

This is the clean, slow oracle (llm.c ``train_gpt2.c`` style) that kernels, the training loop
and generation are checked against; it is not the fast path. Layout is token-major
``[B, T, C]`` with weights ``[out, in]`` (``y = x @ W.T``); the ANE path uses channel-first
``[C, S]``, so compare there after a transpose. Every forward returns what its backward reads;
backwards return the input gradient and accumulate weight gradients with ``+=``.

Glossary: B batch, T time, D dim, H ffn hidden, NH/KVH query/kv heads, HD head dim,
QD = NH*HD, KVD = KVH*HD, R = NH // KVH (query head h reads kv head h // R), V vocab.
RoPE rotates interleaved pairs ``(2i, 2i+1)`` (llama2.c's convention). Deliberately unlike
maderix/ANE's CPU code: the RMSNorm backward applies ``w`` to the first term only (the original
also scales the second, which is wrong), and GQA pairs query head ``h`` with kv head ``h // R``
everywhere (its forward used ``h % KVH``).

The training pipelines call these functions for their CPU parts (channel-first ``[C, S]``
arrays pass as transposed views), so the math of a training step lives here only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from anetrain.model.config import ModelConfig
from anetrain.model.params import LayerParams, Params

# ---------------------------------------------------------------------------------------------
# layer ops: forward/backward pairs


def embedding_forward(tokens: np.ndarray, embed: np.ndarray) -> np.ndarray:
    """tokens [B,T] int, embed [V,D] -> x [B,T,D]."""
    return embed[tokens]


def embedding_backward(dembed: np.ndarray, dx: np.ndarray, tokens: np.ndarray) -> None:
    """dembed [V,D] += scatter of dx [B,T,D] by token id."""
    np.add.at(dembed, tokens.reshape(-1), dx.reshape(-1, dx.shape[-1]))


def rmsnorm_forward(x: np.ndarray, w: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """out = x * rrms * w, rrms = (mean(x^2) + eps)^-1/2.  x [...,D] -> [...,D], rrms [...,1]."""
    rrms = rmsnorm_rrms(x, eps)  # [...,1]
    return x * rrms * w, rrms


def rmsnorm_rrms(x: np.ndarray, eps: float) -> np.ndarray:
    """rrms = (mean(x^2) + eps)^-1/2.  x [...,D] -> [...,1] (what a backward needs when the
    normalized output came from a kernel)."""
    return 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def rmsnorm_backward(
    dw: np.ndarray, dout: np.ndarray, x: np.ndarray, w: np.ndarray, rrms: np.ndarray
) -> np.ndarray:
    """dx = rrms * (w*dout - x * rrms^2 * sum(w*dout*x)/D); dw += sum(dout * x * rrms).

    The ``w`` multiplies only the first term (maderix/ANE's CPU version also scales the second).
    """
    D = x.shape[-1]
    rmsnorm_backward_weight(dw, dout, x, rrms)  # [D]
    wdy = dout * w  # [...,D]
    dot = np.sum(wdy * x, axis=-1, keepdims=True) * (rrms * rrms) / D  # [...,1]
    return rrms * (wdy - x * dot)  # term 1 - term 2


def qk_norm_forward(
    x: np.ndarray, w: np.ndarray | None, cfg: ModelConfig
) -> tuple[np.ndarray, np.ndarray | None]:
    """Qwen3's per-head RMSNorm over HD (one [HD] weight for all heads); identity without it.

    x [...,heads,HD] -> [...,heads,HD], rrms [...,heads,1] (None when ``cfg.qk_norm`` is off).
    Its backward is :func:`rmsnorm_backward` on the same arrays.
    """
    if not cfg.qk_norm:
        return x, None
    if w is None:
        raise ValueError("qk_norm is on but the layer has no q_norm/k_norm weights")
    return rmsnorm_forward(x, w, cfg.norm_eps)


def rmsnorm_backward_weight(
    dw: np.ndarray, dout: np.ndarray, x: np.ndarray, rrms: np.ndarray, scale: float = 1.0
) -> None:
    """The weight half of :func:`rmsnorm_backward`: dw [D] += scale * sum(dout * x * rrms)
    (the static pipeline's ANE extras compute the dx half in a kernel)."""
    D = x.shape[-1]
    dwx = np.sum((dout * x * rrms).reshape(-1, D), axis=0)  # [D]
    dw += dwx if scale == 1.0 else scale * dwx


def matmul_forward(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x [...,IN], w [OUT,IN] -> out [...,OUT] (a 1x1 conv on the ANE)."""
    return x @ w.T


def matmul_backward(dw: np.ndarray, dout: np.ndarray, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """dw [OUT,IN] += dout^T x (over all tokens); returns dx = dout @ w [...,IN]."""
    matmul_backward_weight(dw, dout, x)
    return dout @ w


def matmul_backward_weight(
    dw: np.ndarray, dout: np.ndarray, x: np.ndarray, scale: float = 1.0
) -> None:
    """The weight half of :func:`matmul_backward`: dw [OUT,IN] += scale * dout^T x.

    The pipelines run the dx half on the ANE and this one on the CPU.
    """
    dwx = dout.reshape(-1, dout.shape[-1]).T @ x.reshape(-1, x.shape[-1])  # [OUT,IN]
    dw += dwx if scale == 1.0 else scale * dwx


def rope_tables(
    head_dim: int, positions: np.ndarray, base: float, dtype: npt.DTypeLike = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [P, HD/2] of theta_i(pos) = pos / base^(2i/HD) (llama2.c ``freqs_cos/sin``)."""
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # [HD/2]
    theta = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]  # [P,HD/2]
    return np.cos(theta).astype(dtype), np.sin(theta).astype(dtype)


def rope_forward(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate interleaved pairs (2i, 2i+1) of x [...,HD]; cos/sin broadcast to x[..., ::2]."""
    x0, x1 = x[..., 0::2], x[..., 1::2]  # [...,HD/2] each
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def rope_backward(dout: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """The inverse rotation: (d0 cos + d1 sin, -d0 sin + d1 cos)."""
    d0, d1 = dout[..., 0::2], dout[..., 1::2]
    dx = np.empty_like(dout)
    dx[..., 0::2] = d0 * cos + d1 * sin
    dx[..., 1::2] = -d0 * sin + d1 * cos
    return dx


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Causal GQA softmax(q k^T / sqrt(HD) + mask) v.

    q [B,NH,T,HD], k/v [B,KVH,T,HD] -> out [B,NH,T,HD], att [B,NH,T,T] (probabilities).
    Query head ``h = kv*R + r`` reads kv head ``h // R`` (HF ``repeat_kv``); no tiled copy is made.
    """
    B, NH, T, HD = q.shape
    KVH = k.shape[1]
    R = NH // KVH
    qg = q.reshape(B, KVH, R, T, HD)  # [B,KVH,R,T,HD]
    scores = (qg @ k[:, :, None].swapaxes(-1, -2)) * HD**-0.5  # [B,KVH,R,T,T]
    scores = np.where(causal_mask(T), scores, -np.inf)
    scores -= scores.max(axis=-1, keepdims=True)
    att = np.exp(scores)
    att /= att.sum(axis=-1, keepdims=True)  # [B,KVH,R,T,T]
    out = att @ v[:, :, None]  # [B,KVH,R,T,HD]
    return out.reshape(B, NH, T, HD), att.reshape(B, NH, T, T)


def attention_backward(
    dout: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, att: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dout [B,NH,T,HD] -> dq [B,NH,T,HD], dk/dv [B,KVH,T,HD] (summed over each kv group)."""
    B, NH, T, HD = q.shape
    KVH = k.shape[1]
    R = NH // KVH
    dog = dout.reshape(B, KVH, R, T, HD)  # [B,KVH,R,T,HD]
    attg = att.reshape(B, KVH, R, T, T)  # [B,KVH,R,T,T]
    dv = (attg.swapaxes(-1, -2) @ dog).sum(axis=2)  # [B,KVH,T,HD]
    datt = dog @ v[:, :, None].swapaxes(-1, -2)  # [B,KVH,R,T,T]
    dscores = attg * (datt - np.sum(datt * attg, axis=-1, keepdims=True))  # softmax backward
    dscores *= HD**-0.5
    dq = (dscores @ k[:, :, None]).reshape(B, NH, T, HD)  # [B,NH,T,HD]
    dk = (dscores.swapaxes(-1, -2) @ q.reshape(B, KVH, R, T, HD)).sum(axis=2)  # [B,KVH,T,HD]
    return dq, dk, dv


def swiglu_forward(h1: np.ndarray, h3: np.ndarray) -> np.ndarray:
    """gate = silu(h1) * h3.   h1/h3 [...,H] -> gate [...,H]."""
    return h1 * _sigmoid(h1) * h3


def swiglu_backward(
    dgate: np.ndarray, h1: np.ndarray, h3: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """dh1 = dgate*h3*sig*(1 + h1*(1-sig)), dh3 = dgate*silu(h1), sig = sigmoid(h1)."""
    sig = _sigmoid(h1)
    dh3 = dgate * h1 * sig
    dh1 = dgate * h3 * sig * (1.0 + h1 * (1.0 - sig))
    return dh1, dh3


def residual_forward(x: np.ndarray, branch: np.ndarray, alpha: float) -> np.ndarray:
    """x + alpha*branch (alpha = 1/sqrt(2L) with DeepNet residual scaling, else 1)."""
    return x + alpha * branch if alpha != 1.0 else x + branch


def residual_backward(dout: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """-> dx, dbranch."""
    return dout, alpha * dout if alpha != 1.0 else dout


def crossentropy_forward(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """logits [B,T,V], targets [B,T] -> losses [B,T] (-log p_target), probs [B,T,V]."""
    V = logits.shape[-1]
    flat = logits.reshape(-1, V).copy()  # [N,V]
    losses, probs = crossentropy_inplace(flat, targets.reshape(-1))  # [N], [N,V]
    return losses.reshape(targets.shape), probs.reshape(logits.shape)


def crossentropy_inplace(
    logits: np.ndarray, targets: np.ndarray, dloss: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """logits [N,V] (overwritten), targets [N] in [0, V) -> losses [N], and in logits' buffer
    probs [N,V], or with ``dloss`` the fused softmax + CE backward (probs - onehot) * dloss.

    One exp pass over the largest array of a training step, no temporary of its size. Callers
    with a compacted vocabulary pass the logits of the used ids and compacted targets.
    """
    rows = np.arange(logits.shape[0])
    m = logits.max(axis=1, keepdims=True)  # [N,1]
    picked = logits[rows, targets]  # [N]
    logits -= m
    e = np.exp(logits, out=logits)  # [N,V]
    z = e.sum(axis=1, keepdims=True)  # [N,1]
    losses = np.log(z[:, 0]) + m[:, 0] - picked  # logsumexp - logit_target
    if dloss is None:
        e /= z  # probs
    else:
        e *= dloss / z
        e[rows, targets] -= dloss
    return losses, e


def crossentropy_from_probs(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """probs [N,V] (a softmax computed elsewhere, e.g. an fp16 kernel), targets [N] -> losses
    [N] = -log p_target, with p floored at the smallest normal float32 (an fp16 softmax can
    round a tiny probability to 0)."""
    picked = probs[np.arange(probs.shape[0]), targets].astype(np.float64)  # [N]
    return -np.log(np.maximum(picked, np.finfo(np.float32).tiny))


def crossentropy_softmax_backward(
    dlosses: np.ndarray, probs: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """Fused softmax + CE backward: dlogits = (probs - onehot(target)) * dloss.  -> [B,T,V]."""
    dlogits = probs * dlosses[..., None]
    np.put_along_axis(
        dlogits,
        targets[..., None],
        np.take_along_axis(dlogits, targets[..., None], axis=-1) - dlosses[..., None],
        axis=-1,
    )
    return dlogits


# ---------------------------------------------------------------------------------------------
# the model


@dataclass
class LayerCache:
    """What a block's forward writes and its backward reads."""

    x: np.ndarray  # [B,T,D]    block input (residual stream)
    rrms1: np.ndarray  # [B,T,1]
    xn: np.ndarray  # [B,T,D]   rmsnorm(x) * rms_att
    q: np.ndarray  # [B,NH,T,HD]  after RoPE
    k: np.ndarray  # [B,KVH,T,HD] after RoPE
    v: np.ndarray  # [B,KVH,T,HD]
    att: np.ndarray  # [B,NH,T,T] softmax probabilities
    ao: np.ndarray  # [B,T,QD]  attention output, Wo input
    x2: np.ndarray  # [B,T,D]   x + alpha * Wo ao
    rrms2: np.ndarray  # [B,T,1]
    x2n: np.ndarray  # [B,T,D]
    h1: np.ndarray  # [B,T,H]   W1 x2n
    h3: np.ndarray  # [B,T,H]   W3 x2n
    gate: np.ndarray  # [B,T,H] silu(h1) * h3
    # with qk_norm: q, k before their norm [B,T,NH|KVH,HD] and the norms' rrms [B,T,NH|KVH,1]
    qk_raw: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None


@dataclass
class Cache:
    """Everything :func:`backward` needs from :func:`forward`."""

    config: ModelConfig
    params: Params  # the params actually used (cast to the compute dtype)
    tokens: np.ndarray  # [B,T] int
    targets: np.ndarray | None  # [B,T] int
    cos: np.ndarray  # [T,HD/2]
    sin: np.ndarray  # [T,HD/2]
    layers: list[LayerCache]
    xf: np.ndarray  # [B,T,D]  final residual stream
    rrmsf: np.ndarray  # [B,T,1]
    xfn: np.ndarray  # [B,T,D]  final rmsnorm output, classifier input
    probs: np.ndarray | None  # [B,T,V]


def layer_forward(
    p: LayerParams, x: np.ndarray, cos: np.ndarray, sin: np.ndarray, cfg: ModelConfig
) -> tuple[np.ndarray, LayerCache]:
    """One block. x [B,T,D] -> x_next [B,T,D]; cos/sin [T,HD/2]."""
    B, T, _ = x.shape
    NH, KVH, HD, a = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.res_alpha
    c, s = cos[:, None, :], sin[:, None, :]  # [T,1,HD/2], broadcast over heads
    # attention rmsnorm
    xn, rrms1 = rmsnorm_forward(x, p.rms_att, cfg.norm_eps)  # [B,T,D], [B,T,1]
    # qkv projections, QK-norm (Qwen3), RoPE, heads first
    qr = matmul_forward(xn, p.wq).reshape(B, T, NH, HD)  # [B,T,NH,HD]
    kr = matmul_forward(xn, p.wk).reshape(B, T, KVH, HD)  # [B,T,KVH,HD]
    qn, rrq = qk_norm_forward(qr, p.q_norm, cfg)  # [B,T,NH,HD], [B,T,NH,1]
    kn, rrk = qk_norm_forward(kr, p.k_norm, cfg)  # [B,T,KVH,HD], [B,T,KVH,1]
    q = rope_forward(qn, c, s)  # [B,T,NH,HD]
    k = rope_forward(kn, c, s)  # [B,T,KVH,HD]
    v = matmul_forward(xn, p.wv).reshape(B, T, KVH, HD)  # [B,T,KVH,HD]
    q, k, v = (np.ascontiguousarray(t.transpose(0, 2, 1, 3)) for t in (q, k, v))
    # causal GQA attention
    o, att = attention_forward(q, k, v)  # [B,NH,T,HD], [B,NH,T,T]
    ao = o.transpose(0, 2, 1, 3).reshape(B, T, NH * HD)  # [B,T,QD]
    # output projection, residual
    x2 = residual_forward(x, matmul_forward(ao, p.wo), a)  # [B,T,D]
    # ffn rmsnorm, SwiGLU, residual
    x2n, rrms2 = rmsnorm_forward(x2, p.rms_ffn, cfg.norm_eps)  # [B,T,D], [B,T,1]
    h1 = matmul_forward(x2n, p.w1)  # [B,T,H]
    h3 = matmul_forward(x2n, p.w3)  # [B,T,H]
    gate = swiglu_forward(h1, h3)  # [B,T,H]
    x_next = residual_forward(x2, matmul_forward(gate, p.w2), a)  # [B,T,D]
    qk = (qr, rrq, kr, rrk) if cfg.qk_norm else None
    return x_next, LayerCache(x, rrms1, xn, q, k, v, att, ao, x2, rrms2, x2n, h1, h3, gate, qk)


def layer_backward(
    dp: LayerParams,
    dx_next: np.ndarray,
    p: LayerParams,
    lc: LayerCache,
    cos: np.ndarray,
    sin: np.ndarray,
    cfg: ModelConfig,
) -> np.ndarray:
    """The same list as :func:`layer_forward`, reversed. dx_next [B,T,D] -> dx [B,T,D]."""
    B, T, _ = dx_next.shape
    NH, KVH, HD, a = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.res_alpha
    c, s = cos[:, None, :], sin[:, None, :]
    # ffn branch
    dx2, dffn = residual_backward(dx_next, a)  # [B,T,D]
    dgate = matmul_backward(dp.w2, dffn, lc.gate, p.w2)  # [B,T,H]
    dh1, dh3 = swiglu_backward(dgate, lc.h1, lc.h3)  # [B,T,H]
    dx2n = matmul_backward(dp.w1, dh1, lc.x2n, p.w1)  # [B,T,D]
    dx2n += matmul_backward(dp.w3, dh3, lc.x2n, p.w3)
    dx2 = dx2 + rmsnorm_backward(dp.rms_ffn, dx2n, lc.x2, p.rms_ffn, lc.rrms2)  # [B,T,D]
    # attention branch
    dx, dattn = residual_backward(dx2, a)  # [B,T,D]
    dao = matmul_backward(dp.wo, dattn, lc.ao, p.wo)  # [B,T,QD]
    do = dao.reshape(B, T, NH, HD).transpose(0, 2, 1, 3)  # [B,NH,T,HD]
    dq, dk, dv = attention_backward(do, lc.q, lc.k, lc.v, lc.att)
    dq = rope_backward(dq.transpose(0, 2, 1, 3), c, s)  # [B,T,NH,HD]
    dk = rope_backward(dk.transpose(0, 2, 1, 3), c, s)  # [B,T,KVH,HD]
    if lc.qk_raw is not None:
        qr, rrq, kr, rrk = lc.qk_raw
        dq = rmsnorm_backward(dp.q_norm, dq, qr, p.q_norm, rrq)  # [B,T,NH,HD]
        dk = rmsnorm_backward(dp.k_norm, dk, kr, p.k_norm, rrk)  # [B,T,KVH,HD]
    dq = dq.reshape(B, T, NH * HD)  # [B,T,QD]
    dk = dk.reshape(B, T, KVH * HD)  # [B,T,KVD]
    dv = dv.transpose(0, 2, 1, 3).reshape(B, T, KVH * HD)  # [B,T,KVD]
    dxn = matmul_backward(dp.wq, dq, lc.xn, p.wq)  # [B,T,D]
    dxn += matmul_backward(dp.wk, dk, lc.xn, p.wk)
    dxn += matmul_backward(dp.wv, dv, lc.xn, p.wv)
    return dx + rmsnorm_backward(dp.rms_att, dxn, lc.x, p.rms_att, lc.rrms1)


def forward(
    params: Params,
    tokens: np.ndarray,
    targets: np.ndarray | None = None,
    dtype: npt.DTypeLike = np.float32,
) -> tuple[np.ndarray, float | None, Cache]:
    """tokens [B,T] -> logits [B,T,V], mean CE loss (None without targets), cache.

    ``dtype=np.float64`` computes on a float64 copy of the params (for gradient checks).
    """
    cfg = params.config
    tokens = _check_tokens(tokens, cfg, "tokens")
    if targets is not None:
        targets = _check_tokens(targets, cfg, "targets")
        if targets.shape != tokens.shape:
            raise ValueError(f"targets {targets.shape} must match tokens {tokens.shape}")
    p = params.astype(dtype)
    T = tokens.shape[1]
    cos, sin = rope_tables(cfg.head_dim, np.arange(T), cfg.rope_base, dtype)  # [T,HD/2]
    x = embedding_forward(tokens, p["embed"])  # [B,T,D]
    layers = []
    for i in range(cfg.n_layers):
        x, lc = layer_forward(p.layer(i), x, cos, sin, cfg)
        layers.append(lc)
    xfn, rrmsf = rmsnorm_forward(x, p["rms_final"], cfg.norm_eps)  # [B,T,D]
    logits = matmul_forward(xfn, p.classifier)  # [B,T,V] (the embedding when tied)
    loss, probs = None, None
    if targets is not None:
        losses, probs = crossentropy_forward(logits, targets)  # [B,T], [B,T,V]
        loss = float(losses.mean())
    cache = Cache(cfg, p, tokens, targets, cos, sin, layers, x, rrmsf, xfn, probs)
    return logits, loss, cache


def backward(params: Params, cache: Cache, dloss: float = 1.0) -> Params:
    """Gradients of ``dloss * mean CE`` w.r.t. every parameter (same dtype as the forward).

    ``dloss`` seeds the chain rule; pass the loss scale here (maderix multiplies dlogits by 256).
    """
    if cache.targets is None or cache.probs is None:
        raise ValueError("backward needs a forward pass that was given targets")
    if params.config != cache.config:
        raise ValueError("params and cache come from different configs")
    cfg, p = cache.config, cache.params
    grads = p.zeros_like()
    B, T = cache.tokens.shape
    # kick off the chain rule: each token's loss enters the mean with weight 1/(B*T)
    dlosses = np.full((B, T), dloss / (B * T), dtype=grads.dtype)  # [B,T]
    dlogits = crossentropy_softmax_backward(dlosses, cache.probs, cache.targets)  # [B,T,V]
    dxfn = matmul_backward(grads.classifier, dlogits, cache.xfn, p.classifier)  # [B,T,D]
    dx = rmsnorm_backward(grads["rms_final"], dxfn, cache.xf, p["rms_final"], cache.rrmsf)
    for i in reversed(range(cfg.n_layers)):
        dx = layer_backward(
            grads.layer(i), dx, p.layer(i), cache.layers[i], cache.cos, cache.sin, cfg
        )
    embedding_backward(grads["embed"], dx, cache.tokens)
    return grads


# ---------------------------------------------------------------------------------------------
# single-token decode with a KV cache (generation)


@dataclass
class KVCache:
    """Per-layer keys (after RoPE) and values for positions ``[0, length)``."""

    k: np.ndarray  # [L,KVH,S,HD]
    v: np.ndarray  # [L,KVH,S,HD]
    length: int = 0

    @classmethod
    def empty(
        cls, cfg: ModelConfig, max_len: int | None = None, dtype: npt.DTypeLike = np.float32
    ) -> KVCache:
        shape = (cfg.n_layers, cfg.n_kv_heads, max_len or cfg.seq_len, cfg.head_dim)
        return cls(np.zeros(shape, dtype=dtype), np.zeros(shape, dtype=dtype))

    @property
    def capacity(self) -> int:
        return self.k.shape[2]


def forward_step(params: Params, token: int, pos: int, kv_cache: KVCache) -> np.ndarray:
    """Logits [V] for ``token`` at position ``pos``; writes K/V at ``pos`` (llama2.c ``forward``).

    Computes in the params' dtype. Positions ``< pos`` must already be in the cache.
    """
    cfg = params.config
    NH, KVH, HD, R, a = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.gqa_ratio, cfg.res_alpha
    if not 0 <= pos < kv_cache.capacity:
        raise ValueError(f"pos {pos} outside the KV cache (capacity {kv_cache.capacity})")
    if pos > kv_cache.length:
        raise ValueError(f"pos {pos} skips positions: cache holds {kv_cache.length}")
    if not 0 <= token < cfg.vocab_size:
        raise ValueError(f"token {token} outside vocab [0, {cfg.vocab_size})")
    cos, sin = rope_tables(HD, np.array([pos]), cfg.rope_base, params.dtype)  # [1,HD/2]
    x = params["embed"][token].copy()  # [D]
    for i in range(cfg.n_layers):
        p = params.layer(i)
        # attention rmsnorm, qkv matvecs for this position, QK-norm, RoPE
        xn, _ = rmsnorm_forward(x, p.rms_att, cfg.norm_eps)  # [D]
        qn, _ = qk_norm_forward((p.wq @ xn).reshape(NH, HD), p.q_norm, cfg)  # [NH,HD]
        kn, _ = qk_norm_forward((p.wk @ xn).reshape(KVH, HD), p.k_norm, cfg)  # [KVH,HD]
        q = rope_forward(qn, cos, sin)  # [NH,HD]
        kv_cache.k[i, :, pos] = rope_forward(kn, cos, sin)
        kv_cache.v[i, :, pos] = (p.wv @ xn).reshape(KVH, HD)
        keys = kv_cache.k[i, :, : pos + 1]  # [KVH,P,HD]
        vals = kv_cache.v[i, :, : pos + 1]  # [KVH,P,HD]
        # attention over the cache (causal by construction), query head h -> kv head h // R
        scores = q.reshape(KVH, R, HD) @ keys.swapaxes(-1, -2) * HD**-0.5  # [KVH,R,P]
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        ao = (scores @ vals).reshape(NH * HD)  # [QD]
        # residual connections back into x
        x2 = residual_forward(x, p.wo @ ao, a)  # [D]
        x2n, _ = rmsnorm_forward(x2, p.rms_ffn, cfg.norm_eps)  # [D]
        x = residual_forward(x2, p.w2 @ swiglu_forward(p.w1 @ x2n, p.w3 @ x2n), a)  # [D]
    kv_cache.length = max(kv_cache.length, pos + 1)
    xfn, _ = rmsnorm_forward(x, params["rms_final"], cfg.norm_eps)  # [D]
    return params.classifier @ xfn  # [V]


def prefill(params: Params, tokens: np.ndarray, kv_cache: KVCache) -> np.ndarray:
    """Run a prompt [T] through the batched forward, fill the cache, return the last logits [V]."""
    T = len(tokens)
    if kv_cache.capacity < T:
        raise ValueError(f"prompt of {T} tokens exceeds the KV cache ({kv_cache.capacity})")
    logits, _, cache = forward(params, np.asarray(tokens)[None, :], dtype=params.dtype)
    for i, lc in enumerate(cache.layers):
        kv_cache.k[i, :, :T] = lc.k[0]
        kv_cache.v[i, :, :T] = lc.v[0]
    kv_cache.length = T
    return logits[0, -1]


# ---------------------------------------------------------------------------------------------
# helpers


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow: exp's argument is capped where it would overflow,
    which changes nothing but the result's last bits below sigmoid(-88) ~ 6e-39 (float32)."""
    cap = _EXP_MAX[np.result_type(x, np.float32)]
    return 1.0 / (1.0 + np.exp(np.minimum(-x, cap)))


_EXP_MAX = {np.dtype(t): float(np.floor(np.log(np.finfo(t).max))) for t in (np.float32, np.float64)}

# The additive causal mask's value: fp16's lowest finite. After the max shift exp() of it is 0,
# and unlike -inf it survives fp16 storage and never makes 0 * inf = NaN in a backward.
CAUSAL_MASK_VALUE = float(np.finfo(np.float16).min)  # -65504


@functools.lru_cache(maxsize=8)
def causal_mask(T: int) -> np.ndarray:
    """[T,T] bool, True where key position <= query position (read-only, cached per T)."""
    mask = np.tril(np.ones((T, T), dtype=bool))
    mask.flags.writeable = False
    return mask


def additive_causal_mask(T: int) -> np.ndarray:
    """[T,T] fp16: 0 where :func:`causal_mask` allows, :data:`CAUSAL_MASK_VALUE` elsewhere
    (the ANE kernels add it to the scores before the softmax)."""
    return np.where(causal_mask(T), 0.0, CAUSAL_MASK_VALUE).astype(np.float16)


def _check_tokens(t: np.ndarray, cfg: ModelConfig, what: str) -> np.ndarray:
    t = np.asarray(t)
    if t.ndim != 2 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"{what} must be a 2-D integer array [B,T], got {t.dtype} {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= cfg.vocab_size):
        raise ValueError(f"{what} ids must be in [0, {cfg.vocab_size}), got {t.min()}..{t.max()}")
    return t
