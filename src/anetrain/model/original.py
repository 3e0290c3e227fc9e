"""Import of maderix/ANE training checkpoints (``CkptHdr`` "BLZT" of maderix/ANE).

Header: 96 bytes little-endian ``int magic 0x424C5A54, version, step, total_steps, n_layers,
vocab_size, dim, hidden_dim, n_heads, seq_len; float lr, loss; double cum_compile, cum_train,
cum_wall; int cum_steps, cum_batches, adam_t;`` then ``int pad[3]`` (v2, static pipeline) or
``int kv_heads, head_dim, q_dim`` (v4, dynamic pipeline). Body fp32: per layer ``Wq Wk Wv Wo W1
W2 W3 rms_att rms_ffn``, then ``(m, v)`` for each of those in the same order; then ``rms_final,
m, v``; then ``embed, m, v``. Import only: anetrain writes its own checkpoint format.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anetrain.model._io import ModelFileError, Reader
from anetrain.model.config import ConfigError, ModelConfig
from anetrain.model.params import Params

MAGIC = 0x424C5A54  # "BLZT" as an int; on-disk bytes 54 5A 4C 42
HEADER = struct.Struct("<10i2f3d3i3i")  # 96 bytes, no padding (C layout is identical)
# x0..x2: v2 pad[3]; v4 kv_heads, head_dim, q_dim
HEADER_FIELDS = (
    *("magic", "version", "step", "total_steps", "n_layers", "vocab_size", "dim", "hidden_dim"),
    *("n_heads", "seq_len", "lr", "loss", "cum_compile", "cum_train", "cum_wall", "cum_steps"),
    *("cum_batches", "adam_t", "x0", "x1", "x2"),
)
LAYER_ORDER = ("wq", "wk", "wv", "wo", "w1", "w2", "w3", "rms_att", "rms_ffn")
SUPPORTED = {2: "static pipeline (train_large)", 4: "dynamic pipeline (training_dynamic)"}


@dataclass
class OriginalCheckpoint:
    """An imported checkpoint: weights and the AdamW moments in anetrain's layout."""

    config: ModelConfig
    params: Params
    adam_m: Params
    adam_v: Params
    header: dict[str, Any]  # step, total_steps, lr, loss, adam_t, cum_* ...
    notes: list[str] = field(default_factory=list)  # semantic differences to be aware of


def import_original_checkpoint(path: str | Path) -> OriginalCheckpoint:
    """Read a BLZT v2 or v4 checkpoint; the file size must match the header exactly.

    v4 (dynamic) models used ``x + a*branch`` and RoPE, so ``residual_scaling=True``. v2 (static)
    models had neither RoPE nor ``a``; the weights load, but anetrain's forward (with RoPE) is not
    the function they were trained as (a note says so).
    """
    r = Reader(path)
    vals = HEADER.unpack(r.raw(HEADER.size, "the 96-byte BLZT header"))
    h = dict(zip(HEADER_FIELDS, vals, strict=True))
    if h["magic"] != MAGIC:
        raise ModelFileError(
            f"{r.path}: not a maderix checkpoint (magic 0x{h['magic'] & 0xFFFFFFFF:08X}, "
            f"expected 0x{MAGIC:08X} 'BLZT')"
        )
    version = h["version"]
    if version not in SUPPORTED:
        raise ModelFileError(
            f"{r.path}: BLZT version {version} is not supported (supported: "
            + ", ".join(f"{v} = {d}" for v, d in SUPPORTED.items())
            + ")"
        )
    kv_heads, head_dim, q_dim = (h["x0"], h["x1"], h["x2"]) if version == 4 else (0, 0, 0)
    try:
        cfg = ModelConfig(
            dim=h["dim"],
            n_layers=h["n_layers"],
            n_heads=h["n_heads"],
            n_kv_heads=kv_heads,
            head_dim=head_dim,
            hidden_dim=h["hidden_dim"],
            vocab_size=h["vocab_size"],
            seq_len=h["seq_len"],
            residual_scaling=version == 4,
        )
    except ConfigError as e:
        raise ModelFileError(f"{r.path}: BLZT header describes an invalid model: {e}") from e
    if version == 4 and q_dim != cfg.qd:
        raise ModelFileError(f"{r.path}: header q_dim {q_dim} != n_heads*head_dim {cfg.qd}")
    params, m, v = Params(cfg), Params(cfg), Params(cfg)
    r.expect_end(HEADER.size + 4 * 3 * params.flat.size, f"BLZT v{version}, 3 x weights")
    for i in range(cfg.n_layers):
        for name in LAYER_ORDER:
            t = params[name][i]
            t[...] = r.f32(t.size, f"layer {i} {name}").reshape(t.shape)
        for name in LAYER_ORDER:
            for dst, kind in ((m, "m"), (v, "v")):
                t = dst[name][i]
                t[...] = r.f32(t.size, f"layer {i} {name}.{kind}").reshape(t.shape)
    for name in ("rms_final", "embed"):
        for dst, kind in ((params, ""), (m, ".m"), (v, ".v")):
            t = dst[name]
            t[...] = r.f32(t.size, name + kind).reshape(t.shape)
    header = {k: h[k] for k in HEADER_FIELDS if not k.startswith("x") and k != "magic"}
    notes = []
    if version == 4 and cfg.gqa_ratio > 1:
        notes.append(
            "GQA checkpoint: maderix's forward kernel paired query head h with kv head h % KVH; "
            "anetrain uses h // ratio, so outputs differ from the original forward"
        )
    if version == 2:
        notes.append(
            "static-pipeline checkpoint: trained without RoPE and without residual scaling; "
            "anetrain's forward applies RoPE, so outputs differ from the original model"
        )
    return OriginalCheckpoint(cfg, params, m, v, header, notes)
