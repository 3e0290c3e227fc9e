"""The ten dynamic-weight kernels (``anetrain.kernels.dynamic``) against float64 references.

Every kernel's single input surface is packed region by region from ``KernelSpec.inputs`` and
``KernelSpec.weights`` (each weight region filled with the parameter and transposition the
spec declares; a wrong declaration fails the comparison with the math), evaluated on the
simulator, and every output block of ``KernelSpec.outputs`` is compared with a NumPy float64
reference written here from the math, not from the MIL fragments:

- RoPE rotates interleaved pairs ``(2i, 2i+1)`` of each head as the complex number
  ``x[2i] + 1j x[2i+1]`` times ``exp(1j * t * base**(-2i/HD))`` (the backward: the conjugate);
- GQA: query head ``h`` attends with kv head ``h // group``; kv gradients sum over the group;
- attention is ``softmax(q k^T / sqrt(HD))`` with a causal mask (keys ``j <= t``);
- channel-first ``[C, S]`` layouts with channel ``head * HD + d`` (and ``h * S + t`` for the
  flattened ``[H*S, S]`` probs / dp blocks).

Inputs are rounded to the surface dtype before the reference sees them, so the error measured
is the kernel's own arithmetic. Error = ``max|got - ref| / max|ref|`` per output block; the
bounds leave >= 3x headroom over the worst error measured over 5-6 seeds per case:

- ``Dims(dtype=FP32)``: <= 1e-5 (measured worst 4e-7, kernels alone and chained);
- ``Dims(dtype=FP16)``, one kernel: <= 5e-3 (measured worst 1.5e-3, attention kernels; the
  linear ones stay under 8e-4). One fp16 rounding is up to 2**-11 = 4.9e-4 relative, and the
  attention kernels chain a dozen rounded ops (matmuls, softmax, RoPE, the output reshape);
- ``Dims(dtype=FP16)``, sdpa_fwd -> sdpa_bwd1 -> sdpa_bwd2 through fp16 taps against torch
  autograd: <= 1e-2 (measured worst 2.3e-3).

Configs: MHA (group 1, alpha 1), GQA (group 2, alpha 0.5) and a head_dim != dim / heads case
(group 3, alpha 1.7, rope_base 500). Also: the kernels' backward equals torch autograd of the
attention forward w.r.t. the pre-RoPE q, k, v, and the GQA head mapping is ``h // group``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import replace
from functools import cache

import numpy as np
import pytest

from anetrain import runtime
from anetrain.kernels.dynamic import (
    KERNELS,
    Dims,
    KernelSpec,
    KernelSpecError,
    Region,
    build_kernels,
    span,
)
from anetrain.mil import FP16, FP32, DType

Arrays = dict[str, np.ndarray]

MHA = Dims(dim=32, n_heads=4, n_kv_heads=4, head_dim=8, hidden=48, seq=16)
GQA = Dims(dim=32, n_heads=4, n_kv_heads=2, head_dim=8, hidden=64, seq=16, res_alpha=0.5)
WIDE = Dims(
    dim=24, n_heads=6, n_kv_heads=2, head_dim=12, hidden=40, seq=12, res_alpha=1.7, rope_base=500.0
)
CONFIGS = {"mha": MHA, "gqa": GQA, "wide": WIDE}
TOL = {FP32: 1e-5, FP16: 5e-3}
CHAIN_TOL = {FP32: 1e-5, FP16: 1e-2}  # three fp16 kernels chained through rounded taps


@cache
def _backend() -> runtime.Backend:
    return runtime.get_backend("sim", compile_budget=1_000_000)


@cache
def specs(d: Dims) -> dict[str, KernelSpec]:
    return build_kernels(d)


@cache
def kernel(d: Dims, name: str) -> runtime.Kernel:
    spec = specs(d)[name]
    return _backend().compile(spec.model.program, spec.model.weights, name=name)


def run(d: Dims, name: str, inputs: Arrays) -> Arrays:
    """Pack ``inputs`` (one array per input region, exactly) into the surface, eval, split."""
    spec = specs(d)[name]
    regions = {**spec.inputs, **{key: w.region for key, w in spec.weights.items()}}
    assert set(inputs) == set(regions), name
    surface = np.zeros(spec.in_shape, np.float32)
    for key, r in regions.items():
        assert inputs[key].shape == (r.channels, r.width), (name, key)
        surface[r.ch : r.ch + r.channels, r.col : r.col + r.width] = inputs[key]
    k = kernel(d, name)
    k.input.write(surface)
    k.eval()
    out = k.output.read()
    assert out.shape == spec.out_shape
    return {
        key: out[r.ch : r.ch + r.channels, r.col : r.col + r.width]
        for key, r in spec.outputs.items()
    }


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    assert got.shape == ref.shape
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))


def assert_close(got: np.ndarray, ref: np.ndarray, tol: float, what: str) -> None:
    err = rel_err(np.asarray(got, np.float64), ref)
    assert err <= tol, f"{what}: max|err| / max|ref| = {err:.2e} > {tol:.0e}"


def seed(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode())


# ---- float64 references ------------------------------------------------------------------


def to_heads(x: np.ndarray, n: int) -> np.ndarray:
    """Channel-first ``[n*HD, S]`` -> ``[n, S, HD]``."""
    c, s = x.shape
    return x.reshape(n, c // n, s).transpose(0, 2, 1)


def from_heads(x: np.ndarray) -> np.ndarray:
    """``[n, S, HD]`` -> channel-first ``[n*HD, S]``."""
    n, s, hd = x.shape
    return x.transpose(0, 2, 1).reshape(n * hd, s)


def rope_ref(x: np.ndarray, base: float, inverse: bool = False) -> np.ndarray:
    """Rotate the interleaved pairs of ``x [n, S, HD]`` by ``t * base**(-2i/HD)``."""
    _, s, hd = x.shape
    theta = np.arange(s)[:, None] * base ** (-np.arange(0, hd, 2) / hd)
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp((-1j if inverse else 1j) * theta)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def kv_of(d: Dims) -> Callable[[int], int]:
    return lambda h: h // d.group


def causal_softmax(q: np.ndarray, k: np.ndarray, d: Dims, kv: Callable[[int], int]) -> np.ndarray:
    """``[H, S, S]`` probs from roped ``q [H, S, HD]`` and ``k [KVH, S, HD]``."""
    s = q.shape[1]
    future = np.triu(np.ones((s, s), dtype=bool), k=1)
    probs = np.empty((q.shape[0], s, s))
    for h in range(q.shape[0]):
        scores = q[h] @ k[kv(h)].T / np.sqrt(d.head_dim)
        scores[future] = -np.inf
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs[h] = e / e.sum(axis=1, keepdims=True)
    return probs


def ref_sdpa_fwd(d: Dims, x: Arrays, p: Arrays, kv: Callable[[int], int] | None = None) -> Arrays:
    kv = kv or kv_of(d)
    q = rope_ref(to_heads(p["wq"] @ x["xn"], d.n_heads), d.rope_base)
    k = rope_ref(to_heads(p["wk"] @ x["xn"], d.n_kv_heads), d.rope_base)
    v = p["wv"] @ x["xn"]
    vh = to_heads(v, d.n_kv_heads)
    probs = causal_softmax(q, k, d, kv)
    attn = np.stack([probs[h] @ vh[kv(h)] for h in range(d.n_heads)])
    return {"attn": from_heads(attn), "q_rope": from_heads(q), "k_rope": from_heads(k), "v": v}


def ref_sdpa_bwd1(d: Dims, x: Arrays, p: Arrays, kv: Callable[[int], int] | None = None) -> Arrays:
    kv = kv or kv_of(d)
    q, k = to_heads(x["q_rope"], d.n_heads), to_heads(x["k_rope"], d.n_kv_heads)
    v, da = to_heads(x["v"], d.n_kv_heads), to_heads(x["dao"], d.n_heads)
    probs = causal_softmax(q, k, d, kv)
    dv = np.zeros_like(v)
    for h in range(d.n_heads):
        dv[kv(h)] += probs[h].T @ da[h]
    dp = np.stack([da[h] @ v[kv(h)].T for h in range(d.n_heads)])
    flat = (d.n_heads * d.seq, d.seq)
    return {"dv": from_heads(dv), "probs": probs.reshape(flat), "dp": dp.reshape(flat)}


def ref_sdpa_bwd2(d: Dims, x: Arrays, p: Arrays, kv: Callable[[int], int] | None = None) -> Arrays:
    kv = kv or kv_of(d)
    shape = (d.n_heads, d.seq, d.seq)
    probs, dp = x["probs"].reshape(shape), x["dp"].reshape(shape)
    q, k = to_heads(x["q_rope"], d.n_heads), to_heads(x["k_rope"], d.n_kv_heads)
    ds = probs * (dp - (probs * dp).sum(axis=2, keepdims=True)) * d.scale
    dq = np.stack([ds[h] @ k[kv(h)] for h in range(d.n_heads)])
    dk = np.zeros_like(k)
    for h in range(d.n_heads):
        dk[kv(h)] += ds[h].T @ q[h]
    return {
        "dq": from_heads(rope_ref(dq, d.rope_base, inverse=True)),
        "dk": from_heads(rope_ref(dk, d.rope_base, inverse=True)),
    }


def ref_ffn_fused(d: Dims, x: Arrays, p: Arrays) -> Arrays:
    h1, h3 = p["w1"] @ x["x2n"], p["w3"] @ x["x2n"]
    gate = h1 / (1.0 + np.exp(-h1)) * h3
    return {"x_next": x["x2"] + d.res_alpha * (p["w2"] @ gate), "h1": h1, "h3": h3, "gate": gate}


REFERENCES: dict[str, Callable[[Dims, Arrays, Arrays], Arrays]] = {
    "sdpa_fwd": ref_sdpa_fwd,
    "wo_fwd": lambda d, x, p: {"o": p["wo"] @ x["attn"]},
    "ffn_fused": ref_ffn_fused,
    "ffn_bwd_w2t": lambda d, x, p: {"dgate": p["w2"].T @ x["dffn"]},
    "ffn_bwd_w13t": lambda d, x, p: {"dx2n": p["w1"].T @ x["dh1"] + p["w3"].T @ x["dh3"]},
    "wot_bwd": lambda d, x, p: {"dao": p["wo"].T @ x["dattn"]},
    "sdpa_bwd1": ref_sdpa_bwd1,
    "sdpa_bwd2": ref_sdpa_bwd2,
    "q_bwd": lambda d, x, p: {"dxn_q": p["wq"].T @ x["dq"]},
    "kv_bwd": lambda d, x, p: {"dxn_kv": p["wk"].T @ x["dk"] + p["wv"].T @ x["dv"]},
}


# ---- random operands ---------------------------------------------------------------------


def quantize(a: np.ndarray, dtype: DType) -> np.ndarray:
    """What the surface stores: ``a`` rounded to the kernel dtype, back in float64."""
    return np.asarray(a).astype(dtype.numpy).astype(np.float64)


def random_params(d: Dims, rng: np.random.Generator) -> Arrays:
    """Weights ``[out, in]`` with ~unit-variance outputs for unit-variance inputs."""
    shapes = {
        "wq": (d.q_dim, d.dim),
        "wk": (d.kv_dim, d.dim),
        "wv": (d.kv_dim, d.dim),
        "wo": (d.dim, d.q_dim),
        "w1": (d.hidden, d.dim),
        "w3": (d.hidden, d.dim),
        "w2": (d.dim, d.hidden),
    }
    return {k: quantize(rng.standard_normal(s) / np.sqrt(s[1]), d.dtype) for k, s in shapes.items()}


def random_activations(d: Dims, name: str, rng: np.random.Generator) -> Arrays:
    """The activation regions of kernel ``name``; attention operands are made consistent
    (sdpa_bwd2's probs are real causal softmaxes of its q_rope / k_rope)."""
    s, qd, kvd = d.seq, d.q_dim, d.kv_dim

    def act(c: int) -> np.ndarray:
        return quantize(rng.standard_normal((c, s)), d.dtype)

    if name == "sdpa_bwd2":
        q, k = act(qd), act(kvd)
        probs = causal_softmax(to_heads(q, d.n_heads), to_heads(k, d.n_kv_heads), d, kv_of(d))
        return {
            "probs": quantize(probs.reshape(d.score_ch, s), d.dtype),
            "dp": act(d.score_ch),
            "q_rope": q,
            "k_rope": k,
        }
    channels = {
        "sdpa_fwd": {"xn": d.dim},
        "wo_fwd": {"attn": qd},
        "ffn_fused": {"x2n": d.dim, "x2": d.dim},
        "ffn_bwd_w2t": {"dffn": d.dim},
        "ffn_bwd_w13t": {"dh1": d.hidden, "dh3": d.hidden},
        "wot_bwd": {"dattn": d.dim},
        "sdpa_bwd1": {"q_rope": qd, "k_rope": kvd, "v": kvd, "dao": qd},
        "q_bwd": {"dq": qd},
        "kv_bwd": {"dk": kvd, "dv": kvd},
    }[name]
    return {key: act(c) for key, c in channels.items()}


def packed_inputs(d: Dims, name: str, x: Arrays, p: Arrays) -> Arrays:
    """Activations plus the weight regions, filled as the spec declares."""
    weights = {key: w.layout(p[w.param]) for key, w in specs(d)[name].weights.items()}
    return {**x, **weights}


# ---- tests -------------------------------------------------------------------------------

DTYPES = pytest.mark.parametrize("dtype", [FP32, FP16], ids=["fp32", "fp16"])
CONFIG = pytest.mark.parametrize("config", list(CONFIGS))


def dims(config: str, dtype: DType) -> Dims:
    return replace(CONFIGS[config], dtype=dtype)


def test_every_kernel_has_a_reference() -> None:
    assert [make.__name__ for make in KERNELS] == list(REFERENCES)


def test_weight_regions_cover_each_projection_forward_transposed_backward_not() -> None:
    """Every projection is staged twice: transposed for the forward ([in, out] rows) and as
    stored for the backward's dx (W^T dout needs [out, in] rows)."""
    staged = [(w.param, w.transposed) for s in specs(GQA).values() for w in s.weights.values()]
    params = ("wq", "wk", "wv", "wo", "w1", "w3", "w2")
    assert sorted(staged) == sorted(
        [(p, True) for p in params if p != "w2"] + [(p, False) for p in params] + [("w2", False)]
    )


@CONFIG
def test_composite_spans_are_contiguous_and_match_across_kernels(config: str) -> None:
    """The taps the forward returns as one span land, in the same order and size, in the
    backward kernels' composite inputs; a non-adjacent span is refused."""
    d = dims(config, FP16)
    k = specs(d)
    fwd, b1, b2 = k["sdpa_fwd"], k["sdpa_bwd1"], k["sdpa_bwd2"]
    o = fwd.outputs
    assert fwd.output_region("qkv") == Region(o["q_rope"].ch, d.q_dim + 2 * d.kv_dim, 0, d.seq)
    assert b1.input_region("qkv") == Region(0, d.q_dim + 2 * d.kv_dim, 0, d.seq)
    assert b1.output_region("scores") == Region(b1.outputs["probs"].ch, 2 * d.score_ch, 0, d.seq)
    assert b2.input_region("scores") == Region(0, 2 * d.score_ch, 0, d.seq)
    assert b2.input_region("qk") == Region(2 * d.score_ch, d.q_dim + d.kv_dim, 0, d.seq)
    with pytest.raises(KernelSpecError, match="not contiguous"):
        span("k", "bad", [("a", Region(0, 4, 0, 8)), ("b", Region(5, 4, 0, 8))])
    with pytest.raises(KeyError, match="no region"):
        k["wo_fwd"].output_region("qkv")


@CONFIG
def test_region_maps(config: str) -> None:
    """Input regions lie inside the surface without overlapping, activations (width S) before
    the weights (all channels, spatial tail); output blocks stack channels at width S."""
    d = dims(config, FP16)
    for name, spec in specs(d).items():
        n_ch, width = spec.in_shape
        cover = np.zeros(spec.in_shape, np.int64)
        for key, r in spec.inputs.items():
            assert r.ch + r.channels <= n_ch and r.col + r.width <= width, (name, key)
            cover[r.ch : r.ch + r.channels, r.col : r.col + r.width] += 1
        assert cover.max() == 1, f"{name}: input regions overlap"
        for w in spec.weights.values():
            r = w.region
            cover[r.ch : r.ch + r.channels, r.col : r.col + r.width] += 1
        assert cover.max() == 1, f"{name}: weight regions overlap"
        act_end = max(r.col + r.width for r in spec.inputs.values())
        for key, w in spec.weights.items():
            r = w.region
            assert (r.ch, r.channels) == (0, n_ch) and r.col >= act_end, (name, key)
            assert r.col + r.width <= width, (name, key)
        for key, r in spec.inputs.items():
            assert r.width == d.seq, (name, key)
        blocks = sorted((r.ch, r.channels) for r in spec.outputs.values())
        assert all((r.col, r.width) == (0, d.seq) for r in spec.outputs.values()), name
        starts = np.cumsum([0] + [n for _, n in blocks])
        assert [c for c, _ in blocks] == list(starts[:-1]), name
        assert spec.out_shape == (starts[-1], d.seq), name


@pytest.mark.parametrize("name", list(REFERENCES))
@DTYPES
@CONFIG
def test_kernel_matches_reference(name: str, dtype: DType, config: str) -> None:
    d = dims(config, dtype)
    rng = np.random.default_rng(seed(name, config))
    p = random_params(d, rng)
    x = random_activations(d, name, rng)
    got = run(d, name, packed_inputs(d, name, x, p))
    ref = REFERENCES[name](d, x, p)
    assert set(got) == set(ref)
    for key in ref:
        assert_close(got[key], ref[key], TOL[dtype], f"{name}.{key} [{config}, {dtype}]")


@pytest.mark.parametrize("config", ["gqa", "wide"])
def test_gqa_reference_mapping_is_discriminating(config: str) -> None:
    """A kernel using kv head ``h % n_kv_heads`` would fail the reference comparison."""
    d = dims(config, FP32)
    rng = np.random.default_rng(seed("gqa", config))
    p = random_params(d, rng)

    def modulo(h: int) -> int:
        return h % d.n_kv_heads

    for name, ref in (
        ("sdpa_fwd", ref_sdpa_fwd),
        ("sdpa_bwd1", ref_sdpa_bwd1),
        ("sdpa_bwd2", ref_sdpa_bwd2),
    ):
        x = random_activations(d, name, rng)
        got = run(d, name, packed_inputs(d, name, x, p))
        good, bad = ref(d, x, p), ref(d, x, p, modulo)
        for key in good:
            assert_close(got[key], good[key], TOL[FP32], f"{name}.{key}")
        assert max(rel_err(got[k], bad[k]) for k in bad) > 0.1, name


@pytest.mark.parametrize("config", ["mha", "gqa", "wide"])
def test_gqa_head_mapping_is_h_div_group(config: str) -> None:
    """Structural check per query head h0: only kv head ``h0 // group`` is read / written."""
    d = dims(config, FP32)
    s, hd = d.seq, d.head_dim
    rng = np.random.default_rng(seed("map", config))
    # forward: tokens all alike, so V is constant over time and attn head h == V head kv(h)
    xn = np.repeat(rng.standard_normal((d.dim, 1)), s, axis=1)
    p = random_params(d, rng)
    out = run(d, "sdpa_fwd", packed_inputs(d, "sdpa_fwd", {"xn": xn}, p))
    attn, v = to_heads(out["attn"], d.n_heads), to_heads(out["v"], d.n_kv_heads)
    for h in range(d.n_heads):
        np.testing.assert_allclose(attn[h], v[h // d.group], rtol=1e-5, atol=1e-5)
    for h0 in range(d.n_heads):
        owner = h0 // d.group
        # sdpa_bwd1: upstream grad on query head h0 only -> dv only on kv head h0 // group
        x = random_activations(d, "sdpa_bwd1", rng)
        x["dao"][:] = 0.0
        x["dao"][h0 * hd : (h0 + 1) * hd] = rng.standard_normal((hd, s))
        dv = to_heads(run(d, "sdpa_bwd1", x)["dv"], d.n_kv_heads)
        assert np.abs(dv[owner]).max() > 1e-3
        assert all(not dv[j].any() for j in range(d.n_kv_heads) if j != owner), (h0, owner)
        # sdpa_bwd2: dp on query head h0 only -> dq on head h0, dk on kv head h0 // group
        x = random_activations(d, "sdpa_bwd2", rng)
        x["dp"][: h0 * s] = 0.0
        x["dp"][(h0 + 1) * s :] = 0.0
        got = run(d, "sdpa_bwd2", x)
        dq, dk = to_heads(got["dq"], d.n_heads), to_heads(got["dk"], d.n_kv_heads)
        assert np.abs(dq[h0]).max() > 1e-3 and np.abs(dk[owner]).max() > 1e-3
        assert all(not dq[h].any() for h in range(d.n_heads) if h != h0), h0
        assert all(not dk[j].any() for j in range(d.n_kv_heads) if j != owner), (h0, owner)


@DTYPES
@CONFIG
def test_attention_backward_matches_autograd(dtype: DType, config: str) -> None:
    """sdpa_fwd taps -> sdpa_bwd1 -> sdpa_bwd2 (the pipeline's chain) give the torch autograd
    gradient of ``sum(attn * G)`` w.r.t. the pre-RoPE projections q, k, v."""
    torch = pytest.importorskip("torch")
    functional = pytest.importorskip("torch.nn.functional")
    d = dims(config, dtype)
    rng = np.random.default_rng(seed("autograd", config))
    p = random_params(d, rng)
    xn = quantize(rng.standard_normal((d.dim, d.seq)), dtype)
    upstream = quantize(rng.standard_normal((d.q_dim, d.seq)), dtype)

    fwd = run(d, "sdpa_fwd", packed_inputs(d, "sdpa_fwd", {"xn": xn}, p))
    taps = {key: fwd[key] for key in ("q_rope", "k_rope", "v")}
    b1 = run(d, "sdpa_bwd1", {**taps, "dao": upstream})
    b2 = run(
        d,
        "sdpa_bwd2",
        {"probs": b1["probs"], "dp": b1["dp"], "q_rope": taps["q_rope"], "k_rope": taps["k_rope"]},
    )

    def rope(t):  # [n, S, HD], interleaved pairs as complex numbers (Meta's Llama RoPE)
        n, s, hd = t.shape
        theta = torch.arange(s, dtype=torch.float64)[:, None] * d.rope_base ** (
            -torch.arange(0, hd, 2, dtype=torch.float64) / hd
        )
        z = torch.view_as_complex(t.reshape(n, s, hd // 2, 2)) * torch.polar(
            torch.ones_like(theta), theta
        )
        return torch.view_as_real(z).reshape(n, s, hd)

    def heads(t, n):  # channel-first [n*HD, S] -> [n, S, HD]
        return t.reshape(n, d.head_dim, d.seq).transpose(1, 2).contiguous()

    leaves = {
        key: torch.tensor(p[w] @ xn, requires_grad=True)
        for key, w in (("q", "wq"), ("k", "wk"), ("v", "wv"))
    }
    attn = functional.scaled_dot_product_attention(
        rope(heads(leaves["q"], d.n_heads)),
        rope(heads(leaves["k"], d.n_kv_heads)),
        heads(leaves["v"], d.n_kv_heads),
        is_causal=True,
        enable_gqa=True,
    )
    attn_cf = attn.transpose(1, 2).reshape(d.q_dim, d.seq)
    (attn_cf * torch.tensor(upstream)).sum().backward()

    tol = CHAIN_TOL[dtype]
    assert_close(fwd["attn"], attn_cf.detach().numpy(), tol, "attn")
    assert_close(b2["dq"], leaves["q"].grad.numpy(), tol, "dq")
    assert_close(b2["dk"], leaves["k"].grad.numpy(), tol, "dk")
    assert_close(b1["dv"], leaves["v"].grad.numpy(), tol, "dv")
