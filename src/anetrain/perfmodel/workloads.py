"""Structure-only programs of the benchmark workloads, for modeling without weight data.

They have the same ops, types and shapes as the generators in :mod:`anetrain.kernels.probes`,
but their BLOBFILE references point at no data, so building one costs microseconds instead of
seconds of random weights (an 8192-channel conv has 128 MiB of them). They cannot be compiled;
use the probes for that. ``tests/test_perfmodel_costs.py`` checks the two stay in step.
"""

from __future__ import annotations

import numpy as np

from anetrain.mil import FP16, FP32, INT8, INT32, STRING, Builder, Program, Var

BLOB_HEADER = 64


def _conv_consts(b: Builder) -> dict[str, Var]:
    return {
        "pad_type": b.const("valid", name="c_pad_type", dtype=STRING),
        "strides": b.const([1, 1], name="c_strides", dtype=INT32),
        "pad": b.const([0, 0, 0, 0], name="c_pad", dtype=INT32),
        "dilations": b.const([1, 1], name="c_dilations", dtype=INT32),
        "groups": b.const(1, name="c_groups", dtype=INT32),
    }


def single_conv(ch: int, sp: int) -> Program:
    """``inmem_bench`` / SRAM probes: fp32 I/O cast around one fp16 1x1 conv."""
    b = Builder("ios18")
    x = b.input("x", FP32, [1, ch, 1, sp])
    consts = _conv_consts(b)
    x16 = b.cast(x, b.const("fp16", name="to_fp16", dtype=STRING), name="cast_in")
    w = b.weight("W", FP16, [ch, ch, 1, 1], "weight.bin", BLOB_HEADER)
    y16 = b.conv(x16, w, name="conv", **consts)
    b.returns(b.cast(y16, b.const("fp32", name="to_fp32", dtype=STRING), name="cast_out"))
    return b.program()


def conv_chain(ch: int, sp: int, depth: int, height: int = 1) -> Program:
    """``inmem_peak``: ``depth`` fp16 1x1 convs on ``[1, ch, height, sp]``."""
    b = Builder("ios18")
    h = b.input("x", FP16, [1, ch, height, sp])
    consts = _conv_consts(b)
    chunk = BLOB_HEADER + ch * ch * 2
    for i in range(depth):
        w = b.weight(f"W{i}", FP16, [ch, ch, 1, 1], "weight.bin", BLOB_HEADER + i * chunk)
        h = b.conv(h, w, name=f"c{i}", **consts)
    b.returns(h)
    return b.program()


def int8_chain(ch: int, sp: int, depth: int) -> Program:
    """``ane_int8_bench`` W8A8 on ``[1, ch, sp, sp]``: int8 weights, int8 activations between."""
    b = Builder("ios18")
    h = b.input("x", FP16, [1, ch, sp, sp])
    consts = _conv_consts(b)
    q_scale = b.const(0.125, name="q_scale", dtype=FP16)
    q_dtype = b.const("int8", name="q_dtype", dtype=STRING)
    dq_scale = b.const(0.125, name="dq_scale", dtype=FP16)
    chunk = BLOB_HEADER + ch * ch
    for i in range(depth):
        q = b.blob(INT8, [ch, ch, 1, 1], "weight.bin", BLOB_HEADER + i * chunk)
        w = b.constexpr_affine_dequantize(q, np.int8(0), np.float16(0.125), 0, name=f"W{i}")
        h = b.conv(h, w, name=f"c{i}", **consts)
        if i < depth - 1:
            qi = b.quantize(h, scale=q_scale, output_dtype=q_dtype, name=f"q{i}")
            h = b.dequantize(qi, scale=dq_scale, name=f"dq{i}")
    b.returns(h)
    return b.program()
