"""llama2.c model files (karpathy/llama2.c ``export.py`` / ``run.c``), fp32 versions 0 and 1.

v0 (legacy, what ``run.c`` reads): 7 int32 ``dim, hidden_dim, n_layers, n_heads, n_kv_heads,
vocab_size, seq_len`` (negative vocab = unshared classifier); then fp32 ``embed, rms_att[L],
wq[L], wk[L], wv[L], wo[L], rms_ffn[L], w1[L], w2[L], w3[L], rms_final, freq_cis_real,
freq_cis_imag`` (``seq_len * HD/2`` each), then ``wcls`` if unshared.
v1: uint32 magic ``0x616b3432`` ("ak42"), int32 version 1, the 7 ints, uint8 shared flag, zero
pad to 256 bytes; then ``rms_att[L], rms_ffn[L], rms_final, embed, wq[L], wk[L], wv[L], wo[L],
w1[L], w2[L], w3[L]`` (no RoPE tables), then ``wcls`` if unshared.
Tensors are ``[out, in]`` and RoPE uses interleaved pairs in both projects, so no permutation.
An unshared classifier (``wcls``) is anetrain's ``lm_head``. Only ``head_dim == dim // n_heads``
(llama2.c derives HD) is expressible,
and ``run.c`` hard-codes the RoPE base (10000) and the RMSNorm epsilon (1e-5) and has no QK-norm,
so the exporter refuses any other value rather than write a file that computes something else.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from anetrain.model._io import ModelFileError, Reader, write_atomic
from anetrain.model.config import ConfigError, ModelConfig
from anetrain.model.params import Params, param_shapes
from anetrain.model.reference import rope_tables

MAGIC_V1 = 0x616B3432  # "ak42"
HEADER_V1_BYTES = 256
# What karpathy/llama2.c run.c hard-codes (rope: 10000.0f; rmsnorm: 1e-5f; no q/k norm).
RUN_C_FIXED = {"rope_base": 10000.0, "norm_eps": 1e-5, "qk_norm": False}
_V0_ORDER = ("embed", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final")
_V1_ORDER = ("rms_att", "rms_ffn", "rms_final", "embed", "wq", "wk", "wv", "wo", "w1", "w2", "w3")


def export_llama2c(
    path: str | Path, params: Params, version: int = 0, fold_residual_alpha: bool = True
) -> None:
    """Write ``params`` as a llama2.c fp32 file (atomically). v0 is what ``run.c`` loads.

    With residual scaling, ``x + a*W·z`` equals ``x + (a*W)·z``, so ``a`` is folded into
    ``wo``/``w2`` (exactly the same function in llama2.c, which has no ``a``); otherwise refuse.
    """
    cfg = params.config
    for name, fixed in RUN_C_FIXED.items():
        if getattr(cfg, name) != fixed:
            raise ModelFileError(
                f"llama2.c's run.c fixes {name} = {fixed!r}, but this model has {name} = "
                f"{getattr(cfg, name)!r}; it cannot be exported to llama2.c (export hf instead)"
            )
    if cfg.head_dim != cfg.dim // cfg.n_heads or cfg.dim % cfg.n_heads:
        raise ModelFileError(
            f"llama2.c derives head_dim = dim // n_heads = {cfg.dim // cfg.n_heads}, "
            f"but this model has head_dim {cfg.head_dim}; it cannot be exported"
        )
    if cfg.residual_scaling and not fold_residual_alpha:
        raise ModelFileError("llama2.c has no residual scaling; pass fold_residual_alpha=True")
    p = params.astype(np.float32)
    tensors = dict(p.items())
    if cfg.residual_scaling:
        tensors["wo"] = tensors["wo"] * np.float32(cfg.res_alpha)
        tensors["w2"] = tensors["w2"] * np.float32(cfg.res_alpha)
    shared = cfg.tied_embeddings
    ints = (cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size)
    ints = (*ints, cfg.seq_len)
    wcls = [] if shared else [tensors["lm_head"]]
    chunks: list[bytes | np.ndarray]
    if version == 0:  # a negative vocab_size marks an unshared classifier
        cos, sin = rope_tables(cfg.head_dim, np.arange(cfg.seq_len), cfg.rope_base)
        v0 = (*ints[:5], ints[5] if shared else -ints[5], ints[6])
        chunks = [struct.pack("<7i", *v0), *(tensors[n] for n in _V0_ORDER), cos, sin, *wcls]
    elif version == 1:
        head = struct.pack("<Ii7iB", MAGIC_V1, 1, *ints, int(shared))
        chunks = [head.ljust(HEADER_V1_BYTES, b"\0"), *(tensors[n] for n in _V1_ORDER), *wcls]
    else:
        raise ValueError(f"llama2.c export supports versions 0 and 1, not {version}")
    write_atomic(path, chunks)


def import_llama2c(path: str | Path) -> tuple[ModelConfig, Params]:
    """Read a v0 or v1 fp32 llama2.c file into (config, params); sizes are checked exactly."""
    r = Reader(path)
    first = struct.unpack("<I", r.raw(4, "the header"))[0]
    if first == MAGIC_V1:
        version = struct.unpack("<i", r.raw(4, "the v1 header"))[0]
        if version != 1:
            kind = "Q8_0 int8-quantized" if version == 2 else "unknown"
            raise ModelFileError(
                f"{r.path}: llama2.c version {version} ({kind}) is not supported; "
                "export it with llama2.c's export.py --version 0 or 1"
            )
        ints = struct.unpack("<7i", r.raw(28, "the v1 header"))
        shared = struct.unpack("<B", r.raw(1, "the v1 header"))[0] != 0
        r.pos = HEADER_V1_BYTES
        order, rope_floats = _V1_ORDER, 0
    else:
        r.pos = 0
        version = 0
        ints = struct.unpack("<7i", r.raw(28, "the v0 header (7 int32)"))
        shared = ints[5] > 0
        ints = (*ints[:5], abs(ints[5]), ints[6])
        order, rope_floats = _V0_ORDER, None
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = ints
    if min(ints) <= 0 or dim % n_heads:
        raise ModelFileError(f"{r.path}: implausible llama2.c v{version} header {ints}")
    try:
        cfg = ModelConfig(
            dim=dim,
            n_layers=n_layers,
            n_heads=n_heads,
            n_kv_heads=n_kv,
            hidden_dim=hidden,
            vocab_size=vocab,
            seq_len=seq_len,
            tied_embeddings=shared,
        )
    except ConfigError as e:
        raise ModelFileError(f"{r.path}: llama2.c header {ints} is invalid: {e}") from e
    if rope_floats is None:
        rope_floats = seq_len * cfg.head_dim  # freq_cis_real + freq_cis_imag
    n_weights = sum(math.prod(s) for s in param_shapes(cfg).values())  # exact, no int64 wrap
    r.expect_end(  # before allocating: a header may describe a model no machine can hold
        r.pos + 4 * (n_weights + rope_floats),
        f"llama2.c v{version}, {ints}: {n_weights} weights + {rope_floats} RoPE floats",
    )
    params = Params(cfg)
    for name in order:
        t = params[name]
        t[...] = r.f32(t.size, name).reshape(t.shape)
    if not shared:  # wcls follows everything else (v0: after the RoPE tables)
        r.skip_f32(rope_floats)
        params["lm_head"][...] = r.f32(params["lm_head"].size, "wcls").reshape(cfg.vocab_size, dim)
    return cfg, params
