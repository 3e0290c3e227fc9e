"""The dynamic-weight training kernels (seed-inventory §4.3), compiled once for all layers.

Every kernel takes one ``[1, C, 1, W]`` fp16 input and returns one ``[1, C', 1, S]`` output.
Weights ride in the input's spatial tail, so a weight update is a surface write, never a
recompile. Differences from the original, on purpose:
- one GQA head mapping everywhere (query head ``h`` reads kv head ``h // group``), with the
  kv tiling and the gradient reduction done inside the kernels;
- the RoPE backward (inverse rotation) runs inside ``sdpa_bwd2``, so ``dq``/``dk`` come back
  as gradients of the pre-RoPE projections;
- the forward taps drop ``xnorm``, which the CPU computed itself.

Each :class:`KernelSpec` names its input regions and output blocks, so the training loop
writes and reads by name instead of by magic offsets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from anetrain.kernels.blocks import Fragments
from anetrain.mil import FP16, Builder, DType, Var
from anetrain.mil.analysis import program_stats
from anetrain.mil.blob import BlobWriter
from anetrain.mil.model import MILModel

MASK_VALUE = -65504.0  # fp16 lowest finite: exp() of it is exactly 0 after the max shift


@dataclass(frozen=True)
class Region:
    """Channels ``[ch, ch+channels)`` x spatial columns ``[col, col+width)`` of a surface."""

    ch: int
    channels: int
    col: int
    width: int


@dataclass(frozen=True)
class Dims:
    """The shapes every kernel needs, derived from a model config."""

    dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden: int
    seq: int
    res_alpha: float = 1.0
    rope_base: float = 10000.0
    dtype: DType = FP16  # FP32 builds the same kernels without fp16 rounding (for testing)
    target: str = "ios18"  # MIL dialect: "ios16" (program(1.0)) for M1/M2

    @classmethod
    def from_config(cls, config: object, dtype: DType = FP16, target: str = "ios18") -> Dims:
        return cls(
            dtype=dtype,
            target=target,
            dim=config.dim,  # type: ignore[attr-defined]
            n_heads=config.n_heads,  # type: ignore[attr-defined]
            n_kv_heads=config.n_kv_heads,  # type: ignore[attr-defined]
            head_dim=config.head_dim,  # type: ignore[attr-defined]
            hidden=config.hidden_dim,  # type: ignore[attr-defined]
            seq=config.seq_len,  # type: ignore[attr-defined]
            res_alpha=float(getattr(config, "res_alpha", 1.0)),
            rope_base=float(getattr(config, "rope_base", 10000.0)),
        )

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv_heads

    @property
    def score_ch(self) -> int:
        return self.n_heads * self.seq

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim)


@dataclass
class KernelSpec:
    name: str
    model: MILModel
    inputs: dict[str, Region]
    outputs: dict[str, Region]
    flops: int = 0
    in_shape: tuple[int, int] = field(default=(0, 0))  # (channels, width)
    out_shape: tuple[int, int] = field(default=(0, 0))


def causal_mask(seq: int) -> np.ndarray:
    """``[1, 1, S, S]``: 0 where key <= query, -65504 above the diagonal."""
    upper = np.triu(np.ones((seq, seq), dtype=bool), k=1)
    return np.where(upper, MASK_VALUE, 0.0).astype(np.float16).reshape(1, 1, seq, seq)


def rope_tables(seq: int, head_dim: int, base: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """``cos``/``sin`` ``[1, 1, S, HD]`` for interleaved pairs, each pair's angle duplicated."""
    i = np.arange(head_dim // 2, dtype=np.float64)
    inv_freq = base ** (-2.0 * i / head_dim)
    angles = np.arange(seq, dtype=np.float64)[:, None] * inv_freq[None, :]  # [S, HD/2]
    angles = np.repeat(angles, 2, axis=1)
    shape = (1, 1, seq, head_dim)
    return np.cos(angles).reshape(shape), np.sin(angles).reshape(shape)


class _KernelBuilder:
    """Collects input regions while a kernel's program is built."""

    def __init__(self, name: str, dims: Dims, channels: int, width: int) -> None:
        self.name = name
        self.dims = dims
        self.b = Builder(dims.target)
        self.f = Fragments(self.b, dims.dtype)
        self.x = self.b.input("x", dims.dtype, [1, channels, 1, width])
        self.inputs: dict[str, Region] = {}
        self.weights: dict[str, bytes] = {}

    def region(self, key: str, ch: int, channels: int, col: int, width: int) -> Var:
        self.inputs[key] = Region(ch, channels, col, width)
        return self.f.slice_cols(self.x, ch, channels, col, width, f"in_{key}")

    def matrix(self, key: str, rows: int, col: int, cols: int) -> Var:
        """A packed weight matrix (all input channels, spatial columns) as [1, 1, rows, cols]."""
        self.inputs[key] = Region(0, rows, col, cols)
        return self.f.packed_matrix(self.x, 0, rows, col, cols, key)

    def blob(self, file: str, array: np.ndarray) -> Var:
        writer = BlobWriter()
        offset = writer.add(array.astype(self.dims.dtype.numpy))
        self.weights[f"@model_path/weights/{file}"] = writer.to_bytes()
        return self.b.weight(file.removesuffix(".bin"), self.dims.dtype, array.shape, file, offset)

    def mask(self) -> Var:
        return self.blob("mask.bin", causal_mask(self.dims.seq))

    def rope(self) -> tuple[Var, Var]:
        cos, sin = rope_tables(self.dims.seq, self.dims.head_dim, self.dims.rope_base)
        return self.blob("rope_cos.bin", cos), self.blob("rope_sin.bin", sin)

    def finish(self, outputs: list[tuple[str, Var]]) -> KernelSpec:
        blocks, ch = {}, 0
        for key, var in outputs:
            blocks[key] = Region(ch, var.shape[1], 0, var.shape[3])
            ch += var.shape[1]
        out = self.f.concat_channels([v for _, v in outputs], "out")
        self.b.returns(out)
        model = MILModel(self.b.program(), self.weights)
        return KernelSpec(
            self.name,
            model,
            self.inputs,
            blocks,
            flops=program_stats(model.program).flops,
            in_shape=(self.x.shape[1], self.x.shape[3]),
            out_shape=(out.shape[1], out.shape[3]),
        )


def _dyn_linear(
    k: _KernelBuilder,
    act_key: str,
    act_ch: int,
    act_col: int,
    w_key: str,
    w_col: int,
    out_ch: int,
    name: str,
) -> Var:
    """``[OC, S]`` = packed ``[act_ch, OC]`` weight block applied to the activation columns:
    ``y[o, t] = sum_c act[c, t] * W[c, o]``."""
    act = k.f.token_major(k.region(act_key, 0, act_ch, act_col, k.dims.seq), f"{act_key}_tm")
    y = k.f.linear(act, k.matrix(w_key, act_ch, w_col, out_ch), f"{name}_mm")
    return k.f.channel_first(y, name)


def sdpa_fwd(d: Dims) -> KernelSpec:
    """RMSNormed x -> Q, K, V projections, RoPE, causal attention (GQA). Taps: Q, K (roped), V."""
    s, qd, kvd = d.seq, d.q_dim, d.kv_dim
    k = _KernelBuilder("sdpa_fwd", d, d.dim, s + qd + 2 * kvd)
    xn = k.f.token_major(k.region("xn", 0, d.dim, 0, s), "xn_tm")
    q = k.f.linear(xn, k.matrix("wq_t", d.dim, s, qd), "q_mm")
    kk = k.f.linear(xn, k.matrix("wk_t", d.dim, s + qd, kvd), "k_mm")
    v = k.f.linear(xn, k.matrix("wv_t", d.dim, s + qd + kvd, kvd), "v_mm")
    cos, sin = k.rope()
    q_rope = k.f.rope(k.f.heads(q, d.n_heads, "qh"), cos, sin, "q_rope")
    k_rope = k.f.rope(k.f.heads(kk, d.n_kv_heads, "kh"), cos, sin, "k_rope")
    v_h = k.f.heads(v, d.n_kv_heads, "vh")
    probs = k.f.causal_probs(
        q_rope, k.f.gqa_tile(k_rope, d.group, "k_tile"), k.mask(), d.scale, "probs"
    )
    attn = k.b.matmul(
        probs, k.f.gqa_tile(v_h, d.group, "v_tile"), k.f.false, k.f.false, name="attn_h"
    )
    return k.finish(
        [
            ("attn", k.f.channel_first(attn, "attn")),
            ("q_rope", k.f.channel_first(q_rope, "q_rope_cf")),
            ("k_rope", k.f.channel_first(k_rope, "k_rope_cf")),
            ("v", k.f.channel_first(v, "v_cf")),
        ]
    )


def wo_fwd(d: Dims) -> KernelSpec:
    """Attention output projection: o = Wo attn."""
    k = _KernelBuilder("wo_fwd", d, d.q_dim, d.seq + d.dim)
    return k.finish([("o", _dyn_linear(k, "attn", d.q_dim, 0, "wo_t", d.seq, d.dim, "o"))])


def ffn_fused(d: Dims) -> KernelSpec:
    """SwiGLU FFN plus the scaled residual: x_next = x2 + alpha * W2 (silu(W1 x2n) * W3 x2n).
    Taps: h1, h3, gate."""
    s, fh = d.seq, d.hidden
    k = _KernelBuilder("ffn_fused", d, d.dim, 2 * s + 3 * fh)
    xn = k.f.token_major(k.region("x2n", 0, d.dim, 0, s), "x2n_tm")
    x2 = k.region("x2", 0, d.dim, s, s)
    h1 = k.f.linear(xn, k.matrix("w1_t", d.dim, 2 * s, fh), "h1_mm")
    h3 = k.f.linear(xn, k.matrix("w3_t", d.dim, 2 * s + fh, fh), "h3_mm")
    sig = k.b.sigmoid(h1, name="sig")
    silu = k.b.mul(h1, sig, name="silu")
    gate = k.b.mul(silu, h3, name="gate_tm")
    w2 = k.matrix("w2", d.dim, 2 * s + 2 * fh, fh)  # W2 rows [D, FH], transposed by matmul
    ffn = k.f.channel_first(k.f.linear(gate, w2, "ffn_mm", transpose_w=True), "ffn")
    scaled = k.b.mul(ffn, k.f.scalar(d.res_alpha, "res_alpha"), name="ffn_scaled")
    x_next = k.b.add(x2, scaled, name="x_next")
    return k.finish(
        [
            ("x_next", x_next),
            ("h1", k.f.channel_first(h1, "h1")),
            ("h3", k.f.channel_first(h3, "h3")),
            ("gate", k.f.channel_first(gate, "gate")),
        ]
    )


def ffn_bwd_w2t(d: Dims) -> KernelSpec:
    """dsilu = W2^T dffn."""
    k = _KernelBuilder("ffn_bwd_w2t", d, d.dim, d.seq + d.hidden)
    return k.finish([("dgate", _dyn_linear(k, "dffn", d.dim, 0, "w2", d.seq, d.hidden, "dgate"))])


def ffn_bwd_w13t(d: Dims) -> KernelSpec:
    """dx = W1^T dh1 + W3^T dh3."""
    s, fh = d.seq, d.hidden
    k = _KernelBuilder("ffn_bwd_w13t", d, fh, 2 * s + 2 * d.dim)
    dx1 = _dyn_linear(k, "dh1", fh, 0, "w1", 2 * s, d.dim, "dx1")
    dh3 = k.f.token_major(k.region("dh3", 0, fh, s, s), "dh3_tm")
    dx3 = k.f.channel_first(
        k.f.linear(dh3, k.matrix("w3", fh, 2 * s + d.dim, d.dim), "dx3_mm"), "dx3"
    )
    return k.finish([("dx", k.b.add(dx1, dx3, name="dx"))])


def wot_bwd(d: Dims) -> KernelSpec:
    """da = Wo^T dx2 (dx2 already scaled by alpha on the CPU)."""
    k = _KernelBuilder("wot_bwd", d, d.dim, d.seq + d.q_dim)
    return k.finish([("da", _dyn_linear(k, "dx2", d.dim, 0, "wo", d.seq, d.q_dim, "da"))])


def sdpa_bwd1(d: Dims) -> KernelSpec:
    """Recompute probs; dV = probs^T da (reduced to kv heads); dp = da V^T."""
    s, qd, kvd = d.seq, d.q_dim, d.kv_dim
    k = _KernelBuilder("sdpa_bwd1", d, 2 * qd + 2 * kvd, s)
    q = k.f.heads_from_channels(k.region("q_rope", 0, qd, 0, s), d.n_heads, "q")
    kk = k.f.heads_from_channels(k.region("k_rope", qd, kvd, 0, s), d.n_kv_heads, "k")
    v = k.f.heads_from_channels(k.region("v", qd + kvd, kvd, 0, s), d.n_kv_heads, "v")
    da = k.f.heads_from_channels(k.region("da", qd + 2 * kvd, qd, 0, s), d.n_heads, "da")
    probs = k.f.causal_probs(q, k.f.gqa_tile(kk, d.group, "k_tile"), k.mask(), d.scale, "probs")
    dv_full = k.b.matmul(probs, da, k.f.true, k.f.false, name="dv_full")
    dv = k.f.gqa_reduce(dv_full, d.group, "dv_h")
    dp = k.b.matmul(da, k.f.gqa_tile(v, d.group, "v_tile"), k.f.false, k.f.true, name="dp_h")
    flat = k.f.ints([1, d.score_ch, 1, s], "sc_shape")
    return k.finish(
        [
            ("dv", k.f.channel_first(dv, "dv")),
            ("probs", k.b.reshape(probs, flat, name="probs_flat")),
            ("dp", k.b.reshape(dp, flat, name="dp_flat")),
        ]
    )


def sdpa_bwd2(d: Dims) -> KernelSpec:
    """Softmax backward, dq = ds K, dk = ds^T Q (reduced to kv heads), then the RoPE backward."""
    s, qd, kvd, sc = d.seq, d.q_dim, d.kv_dim, d.score_ch
    k = _KernelBuilder("sdpa_bwd2", d, 2 * sc + qd + kvd, s)
    heads4 = k.f.ints([1, d.n_heads, s, s], "sc4")
    probs = k.b.reshape(k.region("probs", 0, sc, 0, s), heads4, name="probs")
    dp = k.b.reshape(k.region("dp", sc, sc, 0, s), heads4, name="dp")
    q = k.f.heads_from_channels(k.region("q_rope", 2 * sc, qd, 0, s), d.n_heads, "q")
    kk = k.f.heads_from_channels(k.region("k_rope", 2 * sc + qd, kvd, 0, s), d.n_kv_heads, "k")
    pdp = k.b.mul(probs, dp, name="pdp")
    row = k.b.reduce_sum(pdp, k.f.ints([-1], "row_ax"), k.f.true, name="row")
    centered = k.b.sub(dp, row, name="dpc")
    ds = k.b.mul(k.b.mul(probs, centered, name="ds0"), k.f.scalar(d.scale, "scale"), name="ds")
    dq = k.b.matmul(ds, k.f.gqa_tile(kk, d.group, "k_tile"), k.f.false, k.f.false, name="dq_h")
    dk = k.f.gqa_reduce(k.b.matmul(ds, q, k.f.true, k.f.false, name="dk_full"), d.group, "dk_h")
    cos, sin = k.rope()
    dq = k.f.rope(dq, cos, sin, "dq_pre", inverse=True)
    dk = k.f.rope(dk, cos, sin, "dk_pre", inverse=True)
    return k.finish([("dq", k.f.channel_first(dq, "dq")), ("dk", k.f.channel_first(dk, "dk"))])


def q_bwd(d: Dims) -> KernelSpec:
    """dx_q = Wq^T dq."""
    k = _KernelBuilder("q_bwd", d, d.q_dim, d.seq + d.dim)
    return k.finish([("dx", _dyn_linear(k, "dq", d.q_dim, 0, "wq", d.seq, d.dim, "dx"))])


def kv_bwd(d: Dims) -> KernelSpec:
    """dx_kv = Wk^T dk + Wv^T dv."""
    s, kvd = d.seq, d.kv_dim
    k = _KernelBuilder("kv_bwd", d, kvd, 2 * s + 2 * d.dim)
    dxk = _dyn_linear(k, "dk", kvd, 0, "wk", 2 * s, d.dim, "dxk")
    dv = k.f.token_major(k.region("dv", 0, kvd, s, s), "dv_tm")
    dxv = k.f.channel_first(
        k.f.linear(dv, k.matrix("wv", kvd, 2 * s + d.dim, d.dim), "dxv_mm"), "dxv"
    )
    return k.finish([("dx", k.b.add(dxk, dxv, name="dx"))])


KERNELS = (
    sdpa_fwd,
    wo_fwd,
    ffn_fused,
    ffn_bwd_w2t,
    ffn_bwd_w13t,
    wot_bwd,
    sdpa_bwd1,
    sdpa_bwd2,
    q_bwd,
    kv_bwd,
)


def build_kernels(dims: Dims) -> dict[str, KernelSpec]:
    """All ten kernels of the dynamic pipeline for ``dims``."""
    return {spec.name: spec for spec in (make(dims) for make in KERNELS)}
