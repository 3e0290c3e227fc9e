"""The original project's benchmark and probe programs (maderix/ANE).

Each generator returns a :class:`MILModel` (program + weight files) that the runtime compiles;
random weights come from a seeded generator so programs are reproducible. ``data=False`` gives
the same program with no weight data (for cost models: nothing to compile).
"""

from __future__ import annotations

import numpy as np

from anetrain.mil import FP16, FP32, INT8, INT32, STRING, Builder, Var
from anetrain.mil.blob import BlobWriter
from anetrain.mil.model import MILModel
from anetrain.mil.types import BOOL

WEIGHT_FILE = "weights/weight.bin"


def _conv_consts(b: Builder, prefix: str = "c_") -> dict[str, Var]:
    return {
        "pad_type": b.const("valid", name=f"{prefix}pad_type", dtype=STRING),
        "strides": b.const([1, 1], name=f"{prefix}strides", dtype=INT32),
        "pad": b.const([0, 0, 0, 0], name=f"{prefix}pad", dtype=INT32),
        "dilations": b.const([1, 1], name=f"{prefix}dilations", dtype=INT32),
        "groups": b.const(1, name=f"{prefix}groups", dtype=INT32),
    }


class _WeightFile:
    """Random weights for one blob file; with ``data=False`` only their offsets, so a cost
    model can analyse a 128 MiB program without generating it."""

    def __init__(self, seed: int, data: bool) -> None:
        self.rng = np.random.default_rng(seed)
        self.writer = BlobWriter()
        self.data = data

    def fp16(self, shape: tuple[int, ...]) -> int:
        if not self.data:
            return self.writer.reserve(2 * int(np.prod(shape)), np.float16)
        scale = 1.0 / np.sqrt(shape[1])
        return self.writer.add((self.rng.standard_normal(shape) * scale).astype(np.float16))

    def int8(self, shape: tuple[int, ...]) -> int:
        if not self.data:
            return self.writer.reserve(int(np.prod(shape)), np.int8)
        return self.writer.add(self.rng.integers(-127, 128, size=shape, dtype=np.int8))

    def files(self, name: str = WEIGHT_FILE) -> dict[str, bytes]:
        return {f"@model_path/{name}": self.writer.to_bytes()} if self.data else {}


def single_conv(
    ch: int = 256, sp: int = 64, seed: int = 0, target: str = "ios18", data: bool = True
) -> MILModel:
    """``inmem_bench``: one 1x1 conv with fp32 I/O cast to fp16 around it (Example A)."""
    b = Builder(target)
    x = b.input("x", FP32, [1, ch, 1, sp])
    consts = _conv_consts(b)
    to16 = b.const("fp16", name="to_fp16", dtype=STRING)
    x16 = b.cast(x, to16, name="cast_in")
    weights = _WeightFile(seed, data)
    w = b.weight("W", FP16, [ch, ch, 1, 1], "weight.bin", weights.fp16((ch, ch, 1, 1)))
    y16 = b.conv(x16, w, name="conv", **consts)
    to32 = b.const("fp32", name="to_fp32", dtype=STRING)
    b.returns(b.cast(y16, to32, name="cast_out"))
    return MILModel(b.program(), weights.files())


def conv_chain(
    ch: int = 512,
    sp: int = 64,
    depth: int = 32,
    seed: int = 0,
    target: str = "ios18",
    data: bool = True,
    height: int = 1,
) -> MILModel:
    """``inmem_peak``: ``depth`` chained 1x1 convs with weights ``W0..`` in one blob file."""
    b = Builder(target)
    h = b.input("x", FP16, [1, ch, height, sp])
    consts = _conv_consts(b)
    weights = _WeightFile(seed, data)
    for i in range(depth):
        w = b.weight(f"W{i}", FP16, [ch, ch, 1, 1], "weight.bin", weights.fp16((ch, ch, 1, 1)))
        h = b.conv(h, w, name=f"c{i}", **consts)
    b.returns(h)
    return MILModel(b.program(), weights.files())


def softmax_vocab(vocab: int = 32000, seq: int = 256, target: str = "ios18") -> MILModel:
    """``gen_softmax_vocab``: softmax over the channel (vocabulary) axis (Example B)."""
    b = Builder(target)
    x = b.input("x", FP16, [1, vocab, 1, seq])
    ax = b.const(1, name="ax", dtype=INT32)
    b.returns(b.softmax(x, ax, name="sm"))
    return MILModel(b.program())


def rmsnorm(
    dim: int = 768, seq: int = 256, eps: float = 1e-5, seed: int = 0, target: str = "ios18"
) -> MILModel:
    """RMSNorm as the original static kernels spell it, weight in ``rms_w.bin``."""
    b = Builder(target)
    x = b.input("x", FP16, [1, dim, 1, seq])
    sq = b.mul(x, x, name="sq")
    rax = b.const([1], name="rax", dtype=INT32)
    kd = b.const(True, name="kd", dtype=BOOL)
    ss = b.reduce_sum(sq, rax, kd, name="ss")
    invd = b.const(1.0 / dim, name="invd", dtype=FP16)
    ss2 = b.mul(ss, invd, name="ss2")
    eps_v = b.const(eps, name="eps", dtype=FP16)
    ss3 = b.add(ss2, eps_v, name="ss3")
    nhalf = b.const(-0.5, name="nhalf", dtype=FP16)
    rrms = b.pow(ss3, nhalf, name="rrms")
    xr = b.mul(x, rrms, name="xr")
    rng = np.random.default_rng(seed)
    weight = (1.0 + 0.1 * rng.standard_normal((1, dim, 1, 1))).astype(np.float16)
    writer = BlobWriter()
    rw = b.weight("rw", FP16, [1, dim, 1, 1], "rms_w.bin", writer.add(weight))
    b.returns(b.mul(xr, rw, name="xn"))
    return MILModel(b.program(), {"@model_path/weights/rms_w.bin": writer.to_bytes()})


def int8_chain(
    ch: int = 512,
    sp: int = 64,
    depth: int = 8,
    seed: int = 0,
    target: str = "ios18",
    data: bool = True,
) -> MILModel:
    """``ane_int8_bench`` W8A8: int8 weights by constexpr_affine_dequantize, int8 activations
    by quantize/dequantize between layers; all scales 0.125, zero point 0."""
    b = Builder(target)
    x = b.input("x", FP16, [1, ch, sp, sp])
    consts = _conv_consts(b)
    weights = _WeightFile(seed, data)
    q_scale = b.const(0.125, name="q_scale", dtype=FP16)
    q_dtype = b.const("int8", name="q_dtype", dtype=STRING)
    dq_scale = b.const(0.125, name="dq_scale", dtype=FP16)
    h = x
    for i in range(depth):
        q = b.blob(INT8, [ch, ch, 1, 1], "weight.bin", weights.int8((ch, ch, 1, 1)))
        w = b.constexpr_affine_dequantize(q, np.int8(0), np.float16(0.125), 0, name=f"W{i}")
        h = b.conv(h, w, name=f"c{i}", **consts)
        if i < depth - 1:
            qi = b.quantize(h, scale=q_scale, output_dtype=q_dtype, name=f"q{i}")
            h = b.dequantize(qi, scale=dq_scale, name=f"dq{i}")
    b.returns(h)
    return MILModel(b.program(), weights.files())
