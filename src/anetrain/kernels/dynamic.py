"""The dynamic-weight training kernels, compiled once and shared by all layers.

Every kernel takes one ``[1, C, 1, W]`` fp16 input and returns one ``[1, C', 1, S]`` output
(the ANE takes one input surface per request). Weights ride in the input's spatial tail, so a
weight update is a surface write, never a recompile (the scheme of maderix/ANE's dynamic
pipeline). On purpose, unlike that original:
- one GQA head mapping everywhere (query head ``h`` reads kv head ``h // group``), with the
  kv tiling and the gradient reduction done inside the kernels;
- the RoPE backward (inverse rotation) runs inside ``sdpa_bwd2``, so ``dq``/``dk`` come back
  as gradients of the pre-RoPE q/k (with Qwen3's QK-norm: of the normed q/k; the CPU applies
  the norm's backward from the ``q_raw``/``k_raw`` taps, like the block RMSNorms);
- the forward taps drop ``xnorm``, which the CPU computed itself.

Each kernel implements these lines of :func:`anetrain.model.reference.layer_forward` /
:func:`~anetrain.model.reference.layer_backward` (channel-first ``[C, S]``; the CPU does the
rest: RMSNorms, residual adds outside ``ffn_fused``, the SwiGLU backward, weight gradients):

==============  ==========================================================================
kernel          reference lines
==============  ==========================================================================
sdpa_fwd        ``q``, ``k`` (``qk_norm_forward``, RoPE), ``v``; ``attention_forward`` -> ``ao``
wo_fwd          ``matmul_forward(ao, p.wo)`` (the residual add is on the CPU)
ffn_fused       ``h1``, ``h3``, ``swiglu_forward``, ``residual_forward(x2, W2 gate, a)``
ffn_bwd_w2t     ``dgate = matmul_backward(dp.w2, dffn, ...)`` (dx part)
ffn_bwd_w13t    ``dx2n = W1^T dh1 + W3^T dh3`` (dx parts)
wot_bwd         ``dao = matmul_backward(dp.wo, dattn, ...)`` (dx part)
sdpa_bwd1       ``attention_backward``: probs recomputed, ``dv``, and ``datt`` (= ``dp``)
sdpa_bwd2       ``attention_backward``: softmax backward, ``dq``, ``dk``; then ``rope_backward``
q_bwd           ``dxn = W_q^T dq`` (dx part)
kv_bwd          ``dxn += W_k^T dk + W_v^T dv`` (dx parts)
==============  ==========================================================================

A :class:`KernelSpec` is the kernel's whole contract: its activation input regions (named for
what the caller writes there), its weight regions (the parameter each holds, and whether it
is stored transposed), its output blocks, and the composite spans (adjacent blocks read or
copied as one, checked contiguous when the spec is built). Callers write, read and copy by
these names only; no offset is computed outside this module.

LoRA with dropout (``Dims.adapted``): the projections whose output never leaves its kernel
(:data:`INNER_PROJECTIONS`: q, k, v in ``sdpa_fwd``, gate and up in ``ffn_fused``) get two more
regions each, the input ``{param}_u`` (``s A dropout(x)``, rank r, from the CPU) and the weight
``{param}_b_t`` (the adapter's ``B``), and the kernel adds ``B u`` to ``W x`` (peft's forward with
a fresh mask per projection, which a merged weight cannot express).
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
from anetrain.model import reference


class KernelSpecError(ValueError):
    """A kernel declares regions that do not fit together (a bug in this module)."""


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
    qk_norm: bool = False  # Qwen3: per-head RMSNorm on q and k before RoPE (in sdpa_fwd)
    norm_eps: float = 1e-5
    dtype: DType = FP16  # FP32 builds the same kernels without fp16 rounding (for testing)
    target: str = "ios18"  # MIL dialect: "ios16" (program(1.0)) for M1/M2
    # LoRA with dropout: the projections (of INNER_PROJECTIONS) whose adapter term the kernels
    # add themselves, and its rank (empty: the kernels' weights are the whole model)
    adapted: tuple[str, ...] = ()
    adapter_rank: int = 0

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
            qk_norm=bool(getattr(config, "qk_norm", False)),
            norm_eps=float(getattr(config, "norm_eps", 1e-5)),
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


@dataclass(frozen=True)
class WeightRegion:
    """An input region that holds a parameter: ``params[param][layer]`` (``[out, in]``),
    stored transposed when ``transposed``."""

    region: Region
    param: str
    transposed: bool

    def layout(self, w: np.ndarray) -> np.ndarray:
        """The parameter as the region stores it (a vector as one column)."""
        if w.ndim == 1:
            return w.reshape(-1, 1)
        return w.T if self.transposed else w


@dataclass(frozen=True)
class BakedWeight:
    """A BLOBFILE constant that holds a parameter (a static pipeline's baked weight):
    ``params[param][layer]`` (or ``params[param]`` for a model-wide one, ``layer=False``),
    rows ``rows`` of it when set (the compacted classifier), transposed when ``transposed``,
    reshaped to the constant's ``shape``."""

    param: str
    transposed: bool
    shape: tuple[int, ...]
    offset: int  # of the data in its blob file
    layer: bool = True
    rows: np.ndarray | None = None

    def layout(self, w: np.ndarray) -> np.ndarray:
        """The parameter as the constant stores it (fp32; the caller rounds)."""
        if self.rows is not None:
            w = w[self.rows]
        return (w.T if self.transposed else w).reshape(self.shape)


@dataclass
class KernelSpec:
    """One kernel's contract (see the module docstring). A kernel with weights baked as
    BLOBFILE constants (a static pipeline) has no ``weights`` but ``baked`` (blob file key ->
    the parameter it holds); every other blob file is a constant of the kernel (mask, RoPE)."""

    name: str
    model: MILModel
    inputs: dict[str, Region]  # activations, named for what is written into them
    outputs: dict[str, Region]  # output blocks, stacked on channels at width S
    weights: dict[str, WeightRegion] = field(default_factory=dict)
    spans: dict[str, Region] = field(default_factory=dict)  # composite input/output regions
    baked: dict[str, BakedWeight] = field(default_factory=dict)  # weights file key -> param
    flops: int = 0
    in_shape: tuple[int, int] = field(default=(0, 0))  # (channels, width)
    out_shape: tuple[int, int] = field(default=(0, 0))

    def input_region(self, name: str) -> Region:
        """An activation input or a declared composite input span."""
        return self.inputs[name] if name in self.inputs else self._span(name)

    def output_region(self, name: str) -> Region:
        """An output block or a declared composite output span."""
        return self.outputs[name] if name in self.outputs else self._span(name)

    def span_part(self, name: str, *parts: str) -> slice:
        """The channels of output blocks ``parts`` (adjacent, in order) within the output span
        ``name``, as a slice of an array read from that span."""
        outer = self._span(name)
        inner = span(self.name, "+".join(parts), [(p, self.outputs[p]) for p in parts])
        if inner.ch < outer.ch or inner.ch + inner.channels > outer.ch + outer.channels:
            raise KernelSpecError(f"kernel {self.name!r}: {parts} do not lie in span {name!r}")
        return slice(inner.ch - outer.ch, inner.ch - outer.ch + inner.channels)

    def _span(self, name: str) -> Region:
        try:
            return self.spans[name]
        except KeyError:
            raise KeyError(f"kernel {self.name!r} declares no region {name!r}") from None


def span(kernel: str, name: str, parts: list[tuple[str, Region]]) -> Region:
    """The region covering ``parts`` (in order), which must be channel-adjacent blocks of the
    same columns: a composite read or copy is then one contiguous block."""
    first = parts[0][1]
    ch = first.ch
    for part, r in parts:
        if r.ch != ch or (r.col, r.width) != (first.col, first.width):
            raise KernelSpecError(
                f"kernel {kernel!r}: span {name!r} is not contiguous at {part!r} "
                f"(channel {r.ch}, expected {ch}); declare its parts in surface order"
            )
        ch += r.channels
    return Region(first.ch, ch - first.ch, first.col, first.width)


def causal_mask(seq: int) -> np.ndarray:
    """``[1, 1, S, S]`` additive fp16 mask from :func:`reference.causal_mask` (the ANE ignores
    scaled_dot_product_attention's mask, so the kernels add it before the softmax)."""
    return reference.additive_causal_mask(seq).reshape(1, 1, seq, seq)


def rope_tables(seq: int, head_dim: int, base: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """``cos``/``sin`` ``[1, 1, S, HD]`` from :func:`reference.rope_tables`, each pair's angle
    duplicated for the interleaved rotation."""
    cos, sin = reference.rope_tables(head_dim, np.arange(seq), base, np.float64)  # [S, HD/2]
    shape = (1, 1, seq, head_dim)
    return np.repeat(cos, 2, axis=1).reshape(shape), np.repeat(sin, 2, axis=1).reshape(shape)


# The projections whose output is consumed inside its kernel (RoPE and attention, SwiGLU), per
# kernel and with its output width: with LoRA dropout their adapter term must be added there.
# Every other projection's output (and every dx) reaches the CPU, which adds the term itself.
INNER_PROJECTIONS = {"sdpa_fwd": ("wq", "wk", "wv"), "ffn_fused": ("w1", "w3")}


def _out_width(d: Dims, param: str) -> int:
    return {"wq": d.q_dim, "wk": d.kv_dim, "wv": d.kv_dim, "w1": d.hidden, "w3": d.hidden}[param]


class _KernelBuilder:
    """Collects input regions while a kernel's program is built. The input's columns past
    ``width`` hold the adapter terms of the kernel's :data:`INNER_PROJECTIONS` in ``dims.adapted``
    (see :meth:`plus_adapter`)."""

    def __init__(self, name: str, dims: Dims, channels: int, width: int) -> None:
        self.name = name
        self.dims = dims
        self.b = Builder(dims.target)
        self.f = Fragments(self.b, dims.dtype)
        self._adapter_col = width
        adapted = [p for p in INNER_PROJECTIONS.get(name, ()) if p in dims.adapted]
        width += sum(dims.seq + _out_width(dims, p) for p in adapted)
        self.x = self.b.input("x", dims.dtype, [1, channels, 1, width])
        self.inputs: dict[str, Region] = {}
        self.weight_regions: dict[str, WeightRegion] = {}
        self.spans: dict[str, Region] = {}
        self.weights: dict[str, bytes] = {}
        self.baked: dict[str, BakedWeight] = {}

    def region(self, key: str, ch: int, channels: int, col: int, width: int) -> Var:
        self.inputs[key] = Region(ch, channels, col, width)
        return self.f.slice_cols(self.x, ch, channels, col, width, f"in_{key}")

    def matrix(self, key: str, param: str, transposed: bool, rows: int, col: int, cols: int) -> Var:
        """A packed weight matrix (all input channels, spatial columns) as [1, 1, rows, cols],
        holding ``param`` (transposed or not)."""
        region = Region(0, rows, col, cols)
        self.weight_regions[key] = WeightRegion(region, param, transposed)
        return self.f.packed_matrix(self.x, 0, rows, col, cols, key)

    def vector(self, key: str, param: str, length: int, col: int) -> Var:
        """A per-layer weight vector in one spatial column, as ``[1, 1, 1, length]``."""
        if length > self.x.shape[1]:
            raise KernelSpecError(
                f"kernel {self.name!r}: a {length}-value vector does not fit the input's "
                f"{self.x.shape[1]} channels"
            )
        self.weight_regions[key] = WeightRegion(Region(0, length, col, 1), param, False)
        sl = self.f.slice_cols(self.x, 0, length, col, 1, f"{key}_sl")
        return self.b.reshape(sl, self.f.ints([1, 1, 1, length], f"{key}_r"), name=key)

    def plus_adapter(self, y: Var, param: str) -> Var:
        """``y [1,1,S,OUT] + u^T B^T`` when ``param``'s adapter runs in this kernel (LoRA with
        dropout): the input region ``{param}_u`` [r, S] holds ``u = s A dropout(x)`` (written by
        the CPU, a fresh mask each window) and the weight region ``{param}_b_t`` holds the
        adapter's ``B`` (parameter ``{param}.B``, stored transposed). Otherwise ``y``."""
        if param not in self.dims.adapted:
            return y
        r, s, out = self.dims.adapter_rank, self.dims.seq, _out_width(self.dims, param)
        col, self._adapter_col = self._adapter_col, self._adapter_col + s + out
        u = self.f.token_major(self.region(f"{param}_u", 0, r, col, s), f"{param}_u_tm")
        b_t = self.matrix(f"{param}_b_t", f"{param}.B", True, r, col + s, out)
        return self.b.add(y, self.f.linear(u, b_t, f"{param}_lora_mm"), name=f"{param}_lora")

    def input_span(self, key: str, parts: tuple[str, ...]) -> None:
        """Declare the activation inputs ``parts`` as one composite input region ``key``."""
        self.spans[key] = span(self.name, key, [(p, self.inputs[p]) for p in parts])

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

    def finish(
        self, outputs: list[tuple[str, Var]], spans: dict[str, tuple[str, ...]] | None = None
    ) -> KernelSpec:
        """Stack ``outputs`` on channels as the kernel's one output; ``spans`` names composite
        output regions (adjacent blocks), checked contiguous here."""
        blocks, ch = {}, 0
        for key, var in outputs:
            blocks[key] = Region(ch, var.shape[1], 0, var.shape[3])
            ch += var.shape[1]
        for key, parts in (spans or {}).items():
            self.spans[key] = span(self.name, key, [(p, blocks[p]) for p in parts])
        out = self.f.concat_channels([v for _, v in outputs], "out")
        self.b.returns(out)
        model = MILModel(self.b.program(), self.weights)
        return KernelSpec(
            self.name,
            model,
            self.inputs,
            blocks,
            self.weight_regions,
            self.spans,
            self.baked,
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
    weight: tuple[str, bool],
    w_col: int,
    out_ch: int,
    name: str,
) -> Var:
    """``[OC, S]`` = packed ``[act_ch, OC]`` weight block applied to the activation columns:
    ``y[o, t] = sum_c act[c, t] * W[c, o]``; ``weight`` is (param, stored transposed?)."""
    act = k.f.token_major(k.region(act_key, 0, act_ch, act_col, k.dims.seq), f"{act_key}_tm")
    y = k.f.linear(act, k.matrix(w_key, *weight, act_ch, w_col, out_ch), f"{name}_mm")
    return k.f.channel_first(y, name)


def sdpa_fwd(d: Dims) -> KernelSpec:
    """RMSNormed x -> Q, K, V projections, QK-norm (Qwen3), RoPE, causal attention (GQA).
    Taps: Q, K (normed, roped), V, read together as the span ``qkv``; with QK-norm also the raw
    projections ``q_raw``, ``k_raw``, and the norm weights ride in the last two columns."""
    s, qd, kvd = d.seq, d.q_dim, d.kv_dim
    w_end = s + qd + 2 * kvd
    k = _KernelBuilder("sdpa_fwd", d, d.dim, w_end + 2 * d.qk_norm)
    xn = k.f.token_major(k.region("xn", 0, d.dim, 0, s), "xn_tm")
    q = k.f.linear(xn, k.matrix("wq_t", "wq", True, d.dim, s, qd), "q_mm")
    kk = k.f.linear(xn, k.matrix("wk_t", "wk", True, d.dim, s + qd, kvd), "k_mm")
    v = k.f.linear(xn, k.matrix("wv_t", "wv", True, d.dim, s + qd + kvd, kvd), "v_mm")
    q, kk, v = (k.plus_adapter(y, p) for y, p in ((q, "wq"), (kk, "wk"), (v, "wv")))
    q_h, k_h = k.f.heads(q, d.n_heads, "qh"), k.f.heads(kk, d.n_kv_heads, "kh")
    raw_taps: list[tuple[str, Var]] = []
    if d.qk_norm:  # the raw projections are tapped for the CPU's QK-norm backward
        raw_taps = [
            ("q_raw", k.f.channel_first(q, "q_raw")),
            ("k_raw", k.f.channel_first(kk, "k_raw")),
        ]
        q_w = k.vector("q_norm_w", "q_norm", d.head_dim, w_end)
        k_w = k.vector("k_norm_w", "k_norm", d.head_dim, w_end + 1)
        q_h = k.f.head_rmsnorm(q_h, q_w, d.norm_eps, "q_qkn")
        k_h = k.f.head_rmsnorm(k_h, k_w, d.norm_eps, "k_qkn")
    attn, q_rope, k_rope = attention_forward(k, q_h, k_h, k.f.heads(v, d.n_kv_heads, "vh"))
    return k.finish(
        [
            ("attn", k.f.channel_first(attn, "attn")),
            ("q_rope", k.f.channel_first(q_rope, "q_rope_cf")),
            ("k_rope", k.f.channel_first(k_rope, "k_rope_cf")),
            ("v", k.f.channel_first(v, "v_cf")),
            *raw_taps,
        ],
        spans={"qkv": ("q_rope", "k_rope", "v")},
    )


def attention_forward(k: _KernelBuilder, q_h: Var, k_h: Var, v_h: Var) -> tuple[Var, Var, Var]:
    """Heads ``[1, n, S, HD]`` -> RoPE on q and k, causal GQA attention: ``(attn_h, q_rope,
    k_rope)`` (the forward kernels of both pipelines)."""
    d = k.dims
    cos, sin = k.rope()
    q_rope = k.f.rope(q_h, cos, sin, "q_rope")
    k_rope = k.f.rope(k_h, cos, sin, "k_rope")
    probs = k.f.causal_probs(
        q_rope, k.f.gqa_tile(k_rope, d.group, "k_tile"), k.mask(), d.scale, "probs"
    )
    attn = k.b.matmul(
        probs, k.f.gqa_tile(v_h, d.group, "v_tile"), k.f.false, k.f.false, name="attn_h"
    )
    return attn, q_rope, k_rope


def attention_backward1(
    k: _KernelBuilder, q: Var, kk: Var, v: Var, da: Var
) -> list[tuple[str, Var]]:
    """Heads q, k, v and the attention output's gradient ``da`` -> the outputs ``dv`` (reduced
    to kv heads), ``probs`` and ``dp`` (flattened to ``[1, NH*S, 1, S]``), in that order."""
    d, s = k.dims, k.dims.seq
    probs = k.f.causal_probs(q, k.f.gqa_tile(kk, d.group, "k_tile"), k.mask(), d.scale, "probs")
    dv_full = k.b.matmul(probs, da, k.f.true, k.f.false, name="dv_full")
    dv = k.f.gqa_reduce(dv_full, d.group, "dv_h")
    dp = k.b.matmul(da, k.f.gqa_tile(v, d.group, "v_tile"), k.f.false, k.f.true, name="dp_h")
    flat = k.f.ints([1, d.score_ch, 1, s], "sc_shape")
    return [
        ("dv", k.f.channel_first(dv, "dv")),
        ("probs", k.b.reshape(probs, flat, name="probs_flat")),
        ("dp", k.b.reshape(dp, flat, name="dp_flat")),
    ]


def wo_fwd(d: Dims) -> KernelSpec:
    """Attention output projection: o = Wo attn."""
    k = _KernelBuilder("wo_fwd", d, d.q_dim, d.seq + d.dim)
    o = _dyn_linear(k, "attn", d.q_dim, 0, "wo_t", ("wo", True), d.seq, d.dim, "o")
    return k.finish([("o", o)])


def ffn_fused(d: Dims) -> KernelSpec:
    """SwiGLU FFN plus the scaled residual: x_next = x2 + alpha * W2 (silu(W1 x2n) * W3 x2n).
    Taps: h1, h3, gate."""
    s, fh = d.seq, d.hidden
    k = _KernelBuilder("ffn_fused", d, d.dim, 2 * s + 3 * fh)
    xn = k.f.token_major(k.region("x2n", 0, d.dim, 0, s), "x2n_tm")
    x2 = k.region("x2", 0, d.dim, s, s)
    h1 = k.f.linear(xn, k.matrix("w1_t", "w1", True, d.dim, 2 * s, fh), "h1_mm")
    h3 = k.f.linear(xn, k.matrix("w3_t", "w3", True, d.dim, 2 * s + fh, fh), "h3_mm")
    h1, h3 = k.plus_adapter(h1, "w1"), k.plus_adapter(h3, "w3")
    sig = k.b.sigmoid(h1, name="sig")
    silu = k.b.mul(h1, sig, name="silu")
    gate = k.b.mul(silu, h3, name="gate_tm")
    # W2 rows [D, FH], transposed by the matmul
    w2 = k.matrix("w2", "w2", False, d.dim, 2 * s + 2 * fh, fh)
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
    """dgate = W2^T dffn."""
    k = _KernelBuilder("ffn_bwd_w2t", d, d.dim, d.seq + d.hidden)
    dgate = _dyn_linear(k, "dffn", d.dim, 0, "w2", ("w2", False), d.seq, d.hidden, "dgate")
    return k.finish([("dgate", dgate)])


def ffn_bwd_w13t(d: Dims) -> KernelSpec:
    """dx2n = W1^T dh1 + W3^T dh3."""
    s, fh = d.seq, d.hidden
    k = _KernelBuilder("ffn_bwd_w13t", d, fh, 2 * s + 2 * d.dim)
    dx1 = _dyn_linear(k, "dh1", fh, 0, "w1", ("w1", False), 2 * s, d.dim, "dx1")
    dx3 = _dyn_linear(k, "dh3", fh, s, "w3", ("w3", False), 2 * s + d.dim, d.dim, "dx3")
    return k.finish([("dx2n", k.b.add(dx1, dx3, name="dx"))])


def wot_bwd(d: Dims) -> KernelSpec:
    """dao = Wo^T dattn, where dattn = alpha * dx2 is the attention branch's gradient."""
    k = _KernelBuilder("wot_bwd", d, d.dim, d.seq + d.q_dim)
    dao = _dyn_linear(k, "dattn", d.dim, 0, "wo", ("wo", False), d.seq, d.q_dim, "da")
    return k.finish([("dao", dao)])


def sdpa_bwd1(d: Dims) -> KernelSpec:
    """Recompute probs; dV = probs^T dao (reduced to kv heads); dp = dao V^T. The inputs
    ``q_rope, k_rope, v`` form the span ``qkv`` (the forward's taps, in the same order); the
    outputs ``probs, dp`` form the span ``scores`` (sdpa_bwd2's input, in the same order)."""
    s, qd, kvd = d.seq, d.q_dim, d.kv_dim
    k = _KernelBuilder("sdpa_bwd1", d, 2 * qd + 2 * kvd, s)
    q = k.f.heads_from_channels(k.region("q_rope", 0, qd, 0, s), d.n_heads, "q")
    kk = k.f.heads_from_channels(k.region("k_rope", qd, kvd, 0, s), d.n_kv_heads, "k")
    v = k.f.heads_from_channels(k.region("v", qd + kvd, kvd, 0, s), d.n_kv_heads, "v")
    da = k.f.heads_from_channels(k.region("dao", qd + 2 * kvd, qd, 0, s), d.n_heads, "da")
    k.input_span("qkv", ("q_rope", "k_rope", "v"))
    return k.finish(attention_backward1(k, q, kk, v, da), spans={"scores": ("probs", "dp")})


def sdpa_bwd2(d: Dims) -> KernelSpec:
    """Softmax backward, dq = ds K, dk = ds^T Q (reduced to kv heads), then the RoPE backward.
    Input spans: ``scores`` (probs, dp) and ``qk`` (q_rope, k_rope)."""
    s, qd, kvd, sc = d.seq, d.q_dim, d.kv_dim, d.score_ch
    k = _KernelBuilder("sdpa_bwd2", d, 2 * sc + qd + kvd, s)
    heads4 = k.f.ints([1, d.n_heads, s, s], "sc4")
    probs = k.b.reshape(k.region("probs", 0, sc, 0, s), heads4, name="probs")
    dp = k.b.reshape(k.region("dp", sc, sc, 0, s), heads4, name="dp")
    q = k.f.heads_from_channels(k.region("q_rope", 2 * sc, qd, 0, s), d.n_heads, "q")
    kk = k.f.heads_from_channels(k.region("k_rope", 2 * sc + qd, kvd, 0, s), d.n_kv_heads, "k")
    k.input_span("scores", ("probs", "dp"))
    k.input_span("qk", ("q_rope", "k_rope"))
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
    """dxn_q = Wq^T dq."""
    k = _KernelBuilder("q_bwd", d, d.q_dim, d.seq + d.dim)
    dx = _dyn_linear(k, "dq", d.q_dim, 0, "wq", ("wq", False), d.seq, d.dim, "dx")
    return k.finish([("dxn_q", dx)])


def kv_bwd(d: Dims) -> KernelSpec:
    """dxn_kv = Wk^T dk + Wv^T dv."""
    s, kvd = d.seq, d.kv_dim
    k = _KernelBuilder("kv_bwd", d, kvd, 2 * s + 2 * d.dim)
    dxk = _dyn_linear(k, "dk", kvd, 0, "wk", ("wk", False), 2 * s, d.dim, "dxk")
    dxv = _dyn_linear(k, "dv", kvd, s, "wv", ("wv", False), 2 * s + d.dim, d.dim, "dxv")
    return k.finish([("dxn_kv", k.b.add(dxk, dxv, name="dx"))])


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
