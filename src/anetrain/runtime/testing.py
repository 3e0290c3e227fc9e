"""Programs and float64 references for backend contract tests (shared by the sim and ane tests).

Every builder returns ``(program, weights)`` for a dialect the chip accepts, using one packed
fp16 input surface (the hardware's single-input convention), and every reference computes the
same function in float64 NumPy from the fp16-rounded inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from anetrain.hardware.chips import ChipProfile
from anetrain.mil import FP16, Builder, Program, Var
from anetrain.mil.blob import BlobWriter
from anetrain.mil.types import INT32
from anetrain.model.reference import additive_causal_mask

MIN_WIDTH = 32  # Espresso and ironmill report eval failures for [1, C, 1, S] with S under 32


def floor_seq(chip: ChipProfile, *channels: int, itemsize: int = 2) -> int:
    """The smallest S (a multiple of 32) for which every ``[1, C, 1, S]`` surface with these
    channel counts holds at least the chip's ``min_surface_bytes``, the size below which the
    hardware fails evaluation (mechramc/Orion, docs/ane_constraints.md)."""
    need = max(math.ceil(chip.min_surface_bytes / (itemsize * c)) for c in channels)
    return -(-max(MIN_WIDTH, need) // MIN_WIDTH) * MIN_WIDTH


def f16(x: np.ndarray) -> np.ndarray:
    """Round to fp16 and return float64 (what a surface write does to the data)."""
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float64)


@dataclass
class Weights:
    """One MILBlob file under construction: ``add`` returns the ``b.weight`` for an array."""

    builder: Builder
    file: str = "weights.bin"

    def __post_init__(self) -> None:
        self.writer = BlobWriter()

    def add(self, name: str, array: np.ndarray) -> Var:
        arr = np.ascontiguousarray(array, dtype=np.float16)
        offset = self.writer.add(arr)
        return self.builder.weight(name, FP16, arr.shape, self.file, offset)

    def blobs(self) -> dict[str, bytes]:
        return (
            {f"@model_path/weights/{self.file}": self.writer.to_bytes()} if len(self.writer) else {}
        )


def ints(b: Builder, values: list[int], name: str) -> Var:
    return b.const(values, name=name, dtype=INT32)


def conv_program(w: np.ndarray, seq: int, target: str = "ios18") -> tuple[Program, dict]:
    """y = W @ x as a 1x1 conv; ``w`` is ``[out, in]``."""
    b = Builder(target)
    x = b.input("x", FP16, [1, w.shape[1], 1, seq])
    wts = Weights(b)
    b.returns(b.conv(x, wts.add("W", w.reshape(*w.shape, 1, 1)), name="y"))
    return b.program(), wts.blobs()


def matmul_program(m: int, k: int, n: int, target: str = "ios18") -> Program:
    """Input ``[1, m + k, 1, k + n]`` packs A ``[m, k]`` (rows 0..m, cols 0..k) and B ``[k, n]``
    (rows m..m+k, cols k..k+n); output A @ B as ``[1, 1, m, n]`` reshaped to ``[1, m, 1, n]``."""
    b = Builder(target)
    x = b.input("x", FP16, [1, m + k, 1, k + n])
    a = b.slice_by_size(x, ints(b, [0, 0, 0, 0], "ba"), ints(b, [1, m, 1, k], "sa"), name="a")
    bb = b.slice_by_size(x, ints(b, [0, m, 0, k], "bb"), ints(b, [1, k, 1, n], "sb"), name="bm")
    a2 = b.reshape(a, ints(b, [1, 1, m, k], "ra"), name="a2")
    b2 = b.reshape(bb, ints(b, [1, 1, k, n], "rb"), name="b2")
    y = b.matmul(a2, b2, name="mm")
    b.returns(b.reshape(y, ints(b, [1, m, 1, n], "ry"), name="y"))
    return b.program()


def pack_matmul(a: np.ndarray, bm: np.ndarray) -> np.ndarray:
    m, k = a.shape
    n = bm.shape[1]
    packed = np.zeros((m + k, k + n), np.float32)
    packed[:m, :k] = a
    packed[m:, k:] = bm
    return packed


def softmax_program(channels: int, seq: int, target: str = "ios18") -> Program:
    b = Builder(target)
    x = b.input("x", FP16, [1, channels, 1, seq])
    b.returns(b.softmax(x, axis=1, name="y"))
    return b.program()


def softmax_ref(x: np.ndarray, axis: int = 0) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def rmsnorm_program(w: np.ndarray, seq: int, eps: float = 1e-5, target: str = "ios18"):
    """y = x * (mean(x^2 over channels) + eps)^-0.5 * w, the original's fused RMSNorm."""
    dim = w.size
    b = Builder(target)
    x = b.input("x", FP16, [1, dim, 1, seq])
    wts = Weights(b)
    ww = wts.add("rms_w", w.reshape(1, dim, 1, 1))
    r = _rms_factor(b, x, eps)
    b.returns(b.mul(b.mul(x, r, name="xr"), ww, name="y"))
    return b.program(), wts.blobs()


def _rms_factor(b: Builder, x: Var, eps: float) -> Var:
    sq = b.mul(x, x, name="sq")
    ms = b.reduce_mean(sq, ints(b, [1], "rax"), True, name="ms")
    mse = b.add(ms, b.const(np.float16(eps), name="eps"), name="mse")
    return b.pow(mse, b.const(np.float16(-0.5), name="nhalf"), name="r")


def rmsnorm_ref(x: np.ndarray, w: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    r = 1.0 / np.sqrt(np.mean(x * x, axis=0, keepdims=True) + eps)
    return x * r * w.reshape(-1, 1)


def rmsnorm_bwd_program(w: np.ndarray, seq: int, eps: float = 1e-5, target: str = "ios18"):
    """dx of RMSNorm from one packed input ``[1, 2*dim, 1, seq]`` = concat(x, dy) on channels.

    dx = r * (w*dy) - x * r^3 * mean(x * w * dy), with r = (mean(x^2) + eps)^-0.5.
    """
    dim = w.size
    b = Builder(target)
    inp = b.input("xin", FP16, [1, 2 * dim, 1, seq])
    x = b.slice_by_size(inp, ints(b, [0, 0, 0, 0], "bx"), ints(b, [1, dim, 1, seq], "sz"), name="x")
    dy = b.slice_by_size(
        inp, ints(b, [0, dim, 0, 0], "bd"), ints(b, [1, dim, 1, seq], "sd"), name="dy"
    )
    wts = Weights(b)
    ww = wts.add("rms_w", w.reshape(1, dim, 1, 1))
    r = _rms_factor(b, x, eps)
    g = b.mul(dy, ww, name="g")
    dot = b.reduce_mean(b.mul(x, g, name="xg"), ints(b, [1], "dax"), True, name="dot")
    r3 = b.mul(b.mul(r, r, name="r2"), r, name="r3")
    corr = b.mul(x, b.mul(r3, dot, name="r3dot"), name="corr")
    b.returns(b.sub(b.mul(g, r, name="gr"), corr, name="dx"))
    return b.program(), wts.blobs()


def rmsnorm_bwd_ref(x: np.ndarray, dy: np.ndarray, w: np.ndarray, eps: float = 1e-5):
    r = 1.0 / np.sqrt(np.mean(x * x, axis=0, keepdims=True) + eps)
    g = dy * w.reshape(-1, 1)
    return g * r - x * r**3 * np.mean(x * g, axis=0, keepdims=True)


def causal_mask(seq: int) -> np.ndarray:
    """``[seq, seq]`` fp16: 0 where key <= query, else fp16's lowest finite (additive)."""
    return additive_causal_mask(seq)


def attention_program(heads: int, head_dim: int, seq: int, target: str = "ios18"):
    """Causal attention from one input ``[1, 3*D, 1, S]`` = concat(Q, K, V) on channels, via
    matmul + additive mask + softmax + matmul (the decomposition the ANE needs)."""
    dim = heads * head_dim
    b = Builder(target)
    inp = b.input("qkv", FP16, [1, 3 * dim, 1, seq])
    size = ints(b, [1, dim, 1, seq], "sz")
    hsplit = ints(b, [1, heads, head_dim, seq], "hs")
    perm = ints(b, [0, 1, 3, 2], "pm")
    parts = []
    for i, n in enumerate("qkv"):
        sl = b.slice_by_size(inp, ints(b, [0, i * dim, 0, 0], f"b{n}"), size, name=f"{n}_flat")
        parts.append(b.transpose(b.reshape(sl, hsplit, name=f"{n}_h"), perm, name=n))
    q, k, v = parts  # [1, H, S, hd]
    scores = b.matmul(q, k, False, True, name="qk")
    scaled = b.mul(scores, b.const(np.float16(1.0 / np.sqrt(head_dim)), name="scale"), name="sc")
    wts = Weights(b)
    mask = wts.add("mask", causal_mask(seq).reshape(1, 1, seq, seq))
    probs = b.softmax(b.add(scaled, mask, name="masked"), axis=-1, name="probs")
    out = b.matmul(probs, v, name="pv")  # [1, H, S, hd]
    out_t = b.transpose(out, perm, name="pvt")  # [1, H, hd, S]
    b.returns(b.reshape(out_t, ints(b, [1, dim, 1, seq], "ro"), name="y"))
    return b.program(), wts.blobs()


def attention_ref(qkv: np.ndarray, heads: int, causal: bool = True) -> np.ndarray:
    """float64 attention of packed ``[3*D, S]`` channel-first Q, K, V; returns ``[D, S]``."""
    dim = qkv.shape[0] // 3
    hd = dim // heads
    seq = qkv.shape[1]
    q, k, v = (
        qkv[i * dim : (i + 1) * dim].reshape(heads, hd, seq).transpose(0, 2, 1) for i in range(3)
    )
    s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
    if causal:
        s = s + np.where(np.tril(np.ones((seq, seq), bool)), 0.0, -np.inf)
    out = softmax_ref(s, axis=-1) @ v
    return out.transpose(0, 2, 1).reshape(dim, seq)
