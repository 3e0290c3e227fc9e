"""The static-pipeline kernels: per-layer programs with the weights baked in as BLOBFILE
constants of 1x1 convs (the scheme of maderix/ANE's ``train_large``), so a weight update is a
recompile. Each layer compiles its own copy of every kernel, so its output surfaces keep the
forward taps until the backward kernels copy them (surface to surface) into their inputs.

On purpose, unlike that original: RoPE is applied (its static kernels omit it), with the
dynamic pipeline's convention and GQA mapping (query head ``h`` reads kv head ``h // group``),
and the RoPE backward runs in ``sdpa_bwd2`` (shared with the dynamic pipeline).

Each kernel implements these lines of :func:`anetrain.model.reference.layer_forward` /
:func:`~anetrain.model.reference.layer_backward` (channel-first ``[C, S]``):

==============  ==========================================================================
kernel          reference lines
==============  ==========================================================================
fwd_attn        attention ``rmsnorm_forward``; q, k (RoPE), v; ``attention_forward``; ``Wo``
fwd_ffn         ffn ``rmsnorm_forward``; ``h1``, ``h3``, ``swiglu_forward``, ``W2 gate``
ffn_bwd         ``dgate = W2^T dffn``, ``swiglu_backward``, ``dx2n = W1^T dh1 + W3^T dh3``
sdpa_bwd1       ``dao = Wo^T dattn``; ``attention_backward``: probs, ``dv``, ``dp``
sdpa_bwd2       the dynamic pipeline's kernel (weight-free): ``dq``, ``dk``, ``rope_backward``
qkv_bwd         ``dxn = Wq^T dq + Wk^T dk + Wv^T dv``
==============  ==========================================================================

The ANE extras (``--ane-extras``) add ``final_rms`` (the final ``rmsnorm_forward``),
``classifier`` (``logits = embed xf`` as one conv over the compacted vocabulary), ``softmax``
(over the vocabulary, weight-free) and per layer ``rms_att_bwd`` / ``rms_ffn_bwd`` (the dx half
of ``rmsnorm_backward``). The classifier backward stays on the CPU: a conv with the vocabulary
as *input* channels exceeds the chip's input-channel limit (a 32000-channel conv is rejected).
"""

from __future__ import annotations

import numpy as np

from anetrain.kernels import dynamic
from anetrain.kernels.dynamic import BakedWeight, Dims, KernelSpec, Var, _KernelBuilder
from anetrain.mil import INT32, STRING
from anetrain.mil.blob import BlobWriter

# Kernels compiled once per layer (the others once per model). A kernel with baked weights is
# recompiled after every update; a weight-free one (sdpa_bwd2, softmax) once per process.
PER_LAYER = frozenset(
    {"fwd_attn", "fwd_ffn", "ffn_bwd", "sdpa_bwd1", "sdpa_bwd2", "qkv_bwd"}
    | {"rms_att_bwd", "rms_ffn_bwd"}  # the ANE extras
)


class _StaticBuilder(_KernelBuilder):
    """A kernel builder whose weights are baked constants mapped to parameters."""

    def __init__(self, name: str, dims: Dims, channels: int) -> None:
        super().__init__(name, dims, channels, dims.seq)
        self._conv: dict[str, Var] = {}

    def param_const(
        self,
        key: str,
        param: str,
        shape: tuple[int, ...],
        *,
        transposed: bool = False,
        layer: bool = True,
        rows: np.ndarray | None = None,
    ) -> Var:
        """A constant holding ``param`` (see :class:`BakedWeight`); its bytes are written when
        the kernel is compiled for a layer (:func:`bake`)."""
        writer = BlobWriter()
        offset = writer.reserve(2 * int(np.prod(shape)), np.float16)
        w = BakedWeight(param, transposed, shape, offset, layer, rows)
        self.baked[f"@model_path/weights/{key}.bin"] = w
        return self.b.weight(key, self.dims.dtype, shape, f"{key}.bin", offset)

    def conv(self, x: Var, key: str, param: str, oc: int, transposed: bool, name: str) -> Var:
        """``y [1, oc, 1, S] = W x`` as a 1x1 conv with ``W [oc, ic]`` baked from ``param``."""
        w = self.param_const(key, param, (oc, x.shape[1], 1, 1), transposed=transposed)
        return self.conv_with(x, w, name)

    def conv_with(self, x: Var, w: Var, name: str) -> Var:
        """A 1x1 conv of ``x`` with the constant ``w [oc, ic, 1, 1]``."""
        if not self._conv:
            b = self.b
            self._conv = {
                "pad_type": b.const("valid", name="c_pad_type", dtype=STRING),
                "strides": b.const([1, 1], name="c_strides", dtype=INT32),
                "pad": b.const([0, 0, 0, 0], name="c_pad", dtype=INT32),
                "dilations": b.const([1, 1], name="c_dilations", dtype=INT32),
                "groups": b.const(1, name="c_groups", dtype=INT32),
            }
        return self.b.conv(x, w, name=name, **self._conv)

    def rms_terms(self, x: Var, name: str) -> Var:
        """``rrms [1, 1, 1, S] = (mean_c(x^2) + eps)^-1/2`` (RMSNorm's reciprocal RMS)."""
        b, d = self.b, self.dims
        ss = b.reduce_sum(
            b.mul(x, x, name=f"{name}_sq"), self.f.ints([1], f"{name}_ax"), self.f.true,
            name=f"{name}_ss",
        )  # fmt: skip
        ms = b.mul(ss, self.f.scalar(1.0 / d.dim, f"{name}_invd"), name=f"{name}_ms")
        ms = b.add(ms, self.f.scalar(d.norm_eps, f"{name}_eps"), name=f"{name}_mse")
        return b.pow(ms, self.f.scalar(-0.5, f"{name}_nh"), name=f"{name}_rrms")

    def rmsnorm(self, x: Var, key: str, param: str, name: str, layer: bool = True) -> Var:
        """``x * rrms * w`` with ``w [1, D, 1, 1]`` baked from ``param``."""
        rrms = self.rms_terms(x, name)
        w = self.param_const(key, param, (1, self.dims.dim, 1, 1), layer=layer)
        return self.b.mul(self.b.mul(x, rrms, name=f"{name}_xr"), w, name=name)


def fwd_attn(d: Dims) -> KernelSpec:
    """Layer input x -> RMSNorm, Q/K/V convs, QK-norm (Qwen3), RoPE, causal GQA attention, the
    Wo conv. Taps: Q, K (normed, roped), V (span ``qkv``; ``qk`` for sdpa_bwd2), attn (Wo's
    input), xn; with QK-norm also the raw projections ``q_raw``, ``k_raw``."""
    k = _StaticBuilder("fwd_attn", d, d.dim)
    xn = k.rmsnorm(k.region("x", 0, d.dim, 0, d.seq), "rms_att", "rms_att", "xn")
    q = k.conv(xn, "wq", "wq", d.q_dim, False, "q")
    kk = k.conv(xn, "wk", "wk", d.kv_dim, False, "k")
    v = k.conv(xn, "wv", "wv", d.kv_dim, False, "v")
    q_h = k.f.heads_from_channels(q, d.n_heads, "qh")
    k_h = k.f.heads_from_channels(kk, d.n_kv_heads, "kh")
    v_h = k.f.heads_from_channels(v, d.n_kv_heads, "vh")
    raw_taps: list[tuple[str, Var]] = []
    if d.qk_norm:  # Qwen3: per-head RMSNorm before RoPE; raw q, k tapped for its backward
        raw_taps = [("q_raw", q), ("k_raw", kk)]
        hd = (1, 1, 1, d.head_dim)
        q_h = k.f.head_rmsnorm(q_h, k.param_const("q_norm", "q_norm", hd), d.norm_eps, "q_qkn")
        k_h = k.f.head_rmsnorm(k_h, k.param_const("k_norm", "k_norm", hd), d.norm_eps, "k_qkn")
    attn_h, q_rope, k_rope = dynamic.attention_forward(k, q_h, k_h, v_h)
    attn = k.f.channel_first(attn_h, "attn")
    return k.finish(
        [
            ("o", k.conv(attn, "wo", "wo", d.dim, False, "o")),
            ("q_rope", k.f.channel_first(q_rope, "q_rope_cf")),
            ("k_rope", k.f.channel_first(k_rope, "k_rope_cf")),
            ("v", v),
            ("attn", attn),
            ("xn", xn),
            *raw_taps,
        ],
        spans={"qkv": ("q_rope", "k_rope", "v"), "qk": ("q_rope", "k_rope")},
    )


def fwd_ffn(d: Dims) -> KernelSpec:
    """x2 -> RMSNorm, W1/W3 convs, SwiGLU, the W2 conv. Taps: h1, h3 (span ``h13``), gate, x2n."""
    k = _StaticBuilder("fwd_ffn", d, d.dim)
    xn = k.rmsnorm(k.region("x2", 0, d.dim, 0, d.seq), "rms_ffn", "rms_ffn", "x2n")
    h1 = k.conv(xn, "w1", "w1", d.hidden, False, "h1")
    h3 = k.conv(xn, "w3", "w3", d.hidden, False, "h3")
    silu = k.b.mul(h1, k.b.sigmoid(h1, name="sig"), name="silu")
    gate = k.b.mul(silu, h3, name="gate")
    return k.finish(
        [
            ("ffn", k.conv(gate, "w2", "w2", d.dim, False, "ffn")),
            ("h1", h1),
            ("h3", h3),
            ("gate", gate),
            ("x2n", xn),
        ],
        spans={"h13": ("h1", "h3")},
    )


def ffn_bwd(d: Dims) -> KernelSpec:
    """dffn, h1, h3 -> dgate = W2^T dffn, the SwiGLU backward, dx2n = W1^T dh1 + W3^T dh3.
    Input span ``h13`` (fwd_ffn's taps, in the same order). Outputs dx2n, dh1, dh3."""
    k = _StaticBuilder("ffn_bwd", d, d.dim + 2 * d.hidden)
    b = k.b
    dffn = k.region("dffn", 0, d.dim, 0, d.seq)
    h1 = k.region("h1", d.dim, d.hidden, 0, d.seq)
    h3 = k.region("h3", d.dim + d.hidden, d.hidden, 0, d.seq)
    k.input_span("h13", ("h1", "h3"))
    dgate = k.conv(dffn, "w2t", "w2", d.hidden, True, "dgate")
    sig = b.sigmoid(h1, name="sig")
    dh3 = b.mul(b.mul(dgate, h1, name="dg_h1"), sig, name="dh3")
    one = k.f.scalar(1.0, "one")
    oms = b.sub(one, sig, name="oms")  # 1 - sig
    dsd = b.mul(sig, b.add(one, b.mul(h1, oms, name="h1oms"), name="brk"), name="dsd")
    dh1 = b.mul(b.mul(dgate, h3, name="dg_h3"), dsd, name="dh1")
    dx1 = k.conv(dh1, "w1t", "w1", d.dim, True, "dx1")
    dx3 = k.conv(dh3, "w3t", "w3", d.dim, True, "dx3")
    return k.finish([("dx2n", b.add(dx1, dx3, name="dx2n")), ("dh1", dh1), ("dh3", dh3)])


def sdpa_bwd1(d: Dims) -> KernelSpec:
    """q_rope, k_rope, v (span ``qkv``), dattn -> dao = Wo^T dattn, then as the dynamic
    ``sdpa_bwd1``: dv, and the span ``scores`` (probs, dp) for sdpa_bwd2."""
    s, qd, kvd = d.seq, d.q_dim, d.kv_dim
    k = _StaticBuilder("sdpa_bwd1", d, qd + 2 * kvd + d.dim)
    q = k.f.heads_from_channels(k.region("q_rope", 0, qd, 0, s), d.n_heads, "q")
    kk = k.f.heads_from_channels(k.region("k_rope", qd, kvd, 0, s), d.n_kv_heads, "k")
    v = k.f.heads_from_channels(k.region("v", qd + kvd, kvd, 0, s), d.n_kv_heads, "v")
    dattn = k.region("dattn", qd + 2 * kvd, d.dim, 0, s)
    k.input_span("qkv", ("q_rope", "k_rope", "v"))
    dao = k.conv(dattn, "wot", "wo", qd, True, "dao")
    da = k.f.heads_from_channels(dao, d.n_heads, "da")
    outputs = dynamic.attention_backward1(k, q, kk, v, da)
    return k.finish(outputs, spans={"scores": ("probs", "dp")})


def qkv_bwd(d: Dims) -> KernelSpec:
    """dq, dk, dv (pre-RoPE) -> dxn = Wq^T dq + Wk^T dk + Wv^T dv."""
    s, qd, kvd = d.seq, d.q_dim, d.kv_dim
    k = _StaticBuilder("qkv_bwd", d, qd + 2 * kvd)
    dxq = k.conv(k.region("dq", 0, qd, 0, s), "wqt", "wq", d.dim, True, "dxq")
    dxk = k.conv(k.region("dk", qd, kvd, 0, s), "wkt", "wk", d.dim, True, "dxk")
    dxv = k.conv(k.region("dv", qd + kvd, kvd, 0, s), "wvt", "wv", d.dim, True, "dxv")
    dx = k.b.add(k.b.add(dxq, dxk, name="dxqk"), dxv, name="dxn")
    return k.finish([("dxn", dx)])


def _rms_bwd(name: str, param: str):  # type: ignore[no-untyped-def]
    def make(d: Dims) -> KernelSpec:
        """dy, x -> dx of RMSNorm with the baked weight: rrms * (w dy - x rrms^2 sum(w dy x)/D)."""
        k = _StaticBuilder(name, d, 2 * d.dim)
        b = k.b
        dy = k.region("dy", 0, d.dim, 0, d.seq)
        x = k.region("x", d.dim, d.dim, 0, d.seq)
        rrms = k.rms_terms(x, "r")
        dyw = b.mul(dy, k.param_const(param, param, (1, d.dim, 1, 1)), name="dyw")
        dot = b.reduce_sum(b.mul(dyw, x, name="dywx"), k.f.ints([1], "ax"), k.f.true, name="dot")
        coeff = b.mul(b.mul(dot, k.f.scalar(1.0 / d.dim, "invd"), name="dotd"),
                      b.mul(rrms, rrms, name="rr2"), name="coeff")  # fmt: skip
        dx = b.mul(b.sub(dyw, b.mul(x, coeff, name="xc"), name="diff"), rrms, name="dx")
        return k.finish([("dx", dx)])

    make.__name__ = name
    return make


rms_att_bwd = _rms_bwd("rms_att_bwd", "rms_att")
rms_ffn_bwd = _rms_bwd("rms_ffn_bwd", "rms_ffn")


def final_rms(d: Dims) -> KernelSpec:
    """x_L -> the final RMSNorm xf."""
    k = _StaticBuilder("final_rms", d, d.dim)
    x = k.region("x", 0, d.dim, 0, d.seq)
    return k.finish([("xf", k.rmsnorm(x, "rms_final", "rms_final", "xf", layer=False))])


def classifier(d: Dims, rows: np.ndarray, param: str = "embed") -> KernelSpec:
    """xf -> logits over the compacted vocabulary ``rows``: one conv with ``param[rows]`` (the
    tied embedding, or ``lm_head``)."""
    k = _StaticBuilder("classifier", d, d.dim)
    xf = k.region("xf", 0, d.dim, 0, d.seq)
    w = k.param_const("classifier", param, (len(rows), d.dim, 1, 1), layer=False, rows=rows)
    return k.finish([("logits", k.conv_with(xf, w, "logits"))])


def softmax(d: Dims, vocab: int) -> KernelSpec:
    """logits -> softmax over the vocabulary (channel) axis."""
    k = _StaticBuilder("softmax", d, vocab)
    logits = k.region("logits", 0, vocab, 0, d.seq)
    ax = k.b.const(1, name="ax", dtype=INT32)
    return k.finish([("probs", k.b.softmax(logits, ax, name="probs"))])


LAYER_BUILDERS = (fwd_attn, fwd_ffn, ffn_bwd, sdpa_bwd1, qkv_bwd)


def build_static_kernels(
    dims: Dims,
    *,
    extras: bool = False,
    vocab_rows: np.ndarray | None = None,
    classifier_param: str = "embed",
) -> dict[str, KernelSpec]:
    """The static pipeline's kernel specs (programs with unfilled weight files), by name:
    the per-layer ones are compiled once per layer (:func:`bake` fills their weights)."""
    specs = [make(dims) for make in LAYER_BUILDERS] + [dynamic.sdpa_bwd2(dims)]
    if extras:
        if vocab_rows is None:
            raise ValueError("the ANE extras need the classifier's vocabulary rows")
        specs += [rms_att_bwd(dims), rms_ffn_bwd(dims), final_rms(dims)]
        specs += [classifier(dims, vocab_rows, classifier_param), softmax(dims, len(vocab_rows))]
    return {s.name: s for s in specs}


def bake(spec: KernelSpec, params: object, layer: int | None, dtype: np.dtype) -> dict[str, bytes]:
    """The kernel's weights dict for ``layer`` (None: a model-wide kernel): its constant files
    (mask, RoPE) and every baked parameter, rounded to ``dtype`` (the kernel's float type)."""
    files = dict(spec.model.weights)
    for key, w in spec.baked.items():
        value = params[w.param]  # type: ignore[index]
        data = w.layout(value[layer] if w.layer else value)
        writer = BlobWriter()
        offset = writer.add(np.ascontiguousarray(data, dtype=dtype))
        if offset != w.offset:
            raise dynamic.KernelSpecError(
                f"kernel {spec.name!r}: {key} landed at offset {offset}, expected {w.offset}"
            )
        files[key] = writer.to_bytes()
    return files


def compile_plan(specs: dict[str, KernelSpec], n_layers: int) -> tuple[list[str], list[str]]:
    """(kernels recompiled per batch, kernels compiled once per process), each name listed
    once per compile: per layer ``n_layers`` times."""
    per_batch: list[str] = []
    once: list[str] = []
    for name, spec in specs.items():
        (per_batch if spec.baked else once).extend([name] * (n_layers if name in PER_LAYER else 1))
    return per_batch, once
