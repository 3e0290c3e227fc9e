"""Cross-check our MIL builder against coremltools: same ops, same inferred types, a real package.

Each model is built with our :class:`Builder` in the ANE layout ([1, C, 1, S] fp16), rebuilt op by
op with coremltools' ``mb`` builder (which re-runs its own validation and type inference), and
converted to an ``.mlpackage``. A disagreement names the var, so it points at a bug in our
``ops.py`` inference (or in coremltools). Where coremltools can evaluate an op on constants
(value inference), results are also compared with a float64 NumPy reference.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

from coremltools.converters.mil.mil import Builder as mb  # noqa: E402

from anetrain.errors import AnetrainError, MILTypeError  # noqa: E402
from anetrain.mil import (  # noqa: E402
    FP16,
    FP32,
    INT8,
    INT32,
    UINT8,
    Builder,
    Program,
    Var,
    parse_program,
    print_program,
)
from anetrain.mil.blob import read_blob_file, write_blob_file  # noqa: E402
from anetrain.mil.coreml import (  # noqa: E402
    TRANSLATED_OPS,
    BlobResolver,
    CoreMLError,
    assert_types_match,
    blob_resolver,
    compare_types,
    coreml_target,
    export_mlpackage,
    to_coreml_program,
)
from anetrain.mil.ops import REGISTRY  # noqa: E402
from anetrain.mil.types import TensorType  # noqa: E402

C, S, HEADS = 32, 16, 4
D = C // HEADS
f16 = np.float16
RNG = np.random.default_rng(0)


def rand(*shape: int, scale: float = 0.2) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(f16)


def crosscheck(
    program: Program, tmp_path: Path, resolve_blob: BlobResolver | None = None
) -> object:
    """coremltools accepts ``program`` with identical types and writes an .mlpackage."""
    prog = to_coreml_program(program, resolve_blob)
    assert compare_types(program, prog) == []
    out = export_mlpackage(program, tmp_path / "model.mlpackage", resolve_blob)
    assert (out / "Manifest.json").is_file()
    # The saved ML program runs our ops, in our order, under our names (no pass rewrote them).
    spec = ct.utils.load_spec(str(out))
    (block,) = spec.mlProgram.functions["main"].block_specializations.values()
    saved = [(op.type, op.outputs[0].name) for op in block.operations if op.type != "const"]
    ours = [(op.op_type, op.outputs[0].name) for op in program.main.operations]
    assert saved == [o for o in ours if o[0] != "const"]
    return prog


def their_val(prog: object, name: str) -> np.ndarray:
    """The value coremltools' value inference computed for var ``name``."""
    fn = prog.functions["main"]  # type: ignore[attr-defined]
    for op in fn.operations:
        for var in op.outputs:
            if var.name == name:
                assert var.val is not None, f"coremltools did not evaluate {name}"
                return np.asarray(var.val)
    raise KeyError(name)


# --------------------------------------------------------------------------------------------
# 1. conv chain with BLOBFILE weights


def test_conv_chain_blobfile(tmp_path: Path) -> None:
    weights = [rand(C, C, 1, 1), rand(C, C // 4, 1, 1), rand(2 * C, C, 1, 1), rand(2 * C)]
    (tmp_path / "weights").mkdir()
    offsets = write_blob_file(tmp_path / "weights" / "weight.bin", weights)

    b = Builder("ios18")
    x = b.input("x", FP16, [1, C, 1, S])
    w = [
        b.weight(f"w{i}", FP16, a.shape, "weight.bin", off)
        for i, (a, off) in enumerate(zip(weights, offsets, strict=True))
    ]
    h = b.conv(x, w[0], name="c0")
    h = b.conv(h, w[1], groups=4, name="c1_grouped")
    h = b.silu(h, name="act")
    h = b.conv(h, w[2], bias=w[3], name="c2")
    y = b.conv(h, rand(C, 2 * C, 1, 1), name="c3_inline")
    b.returns(y)
    program = b.program()
    assert y.type == TensorType(FP16, (1, C, 1, S))

    crosscheck(program, tmp_path / "out", resolve_blob=blob_resolver(tmp_path))

    # The package's own weight file (written by coremltools) holds our BLOBFILE data verbatim.
    package = tmp_path / "out" / "model.mlpackage"
    theirs = read_blob_file(package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin")
    stored = [theirs.read(e.offset).tobytes() for e in theirs if e.dtype.numpy_dtype == f16]
    for a in weights:
        assert a.tobytes() in stored


def test_blobfile_needs_resolver() -> None:
    b = Builder("ios18")
    x = b.input("x", FP16, [1, C, 1, S])
    b.returns(b.conv(x, b.weight("w", FP16, [C, C, 1, 1], "weight.bin", 64)))
    with pytest.raises(CoreMLError, match="resolve_blob"):
        to_coreml_program(b.program())


def test_blob_resolver_checks_declared_type(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    (off,) = write_blob_file(tmp_path / "weights" / "weight.bin", [rand(C, C, 1, 1)])
    b = Builder("ios18")
    x = b.input("x", FP16, [1, C, 1, S])
    b.returns(b.conv(x, b.weight("w", FP16, [C, C // 2, 1, 1], "weight.bin", off), groups=2))
    with pytest.raises(AnetrainError, match="shape"):
        to_coreml_program(b.program(), blob_resolver(tmp_path))


# --------------------------------------------------------------------------------------------
# 2. RMSNorm


def rmsnorm(b: Builder, x: Var, weight: np.ndarray, eps: float = 1e-5) -> Var:
    sq = b.mul(x, x, name="sq")
    ss = b.reduce_sum(sq, axes=[1], keep_dims=True, name="ss")
    ms = b.mul(ss, f16(1.0 / C), name="ms")
    ms_eps = b.add(ms, f16(eps), name="ms_eps")
    rrms = b.pow(ms_eps, f16(-0.5), name="rrms")
    xr = b.mul(x, rrms, name="xr")
    return b.mul(xr, weight.reshape(1, C, 1, 1), name="y")


def test_rmsnorm(tmp_path: Path) -> None:
    b = Builder("ios18")
    x = b.input("x", FP16, [1, C, 1, S])
    b.returns(rmsnorm(b, x, rand(C, scale=1.0)))
    crosscheck(b.program(), tmp_path)


def test_rmsnorm_values_match_numpy() -> None:
    xv, wv = rand(1, C, 1, S, scale=1.0), rand(C, scale=1.0)
    b = Builder("ios18")
    y = rmsnorm(b, b.const(xv, name="x"), wv)
    b.returns(y)
    got = their_val(to_coreml_program(b.program()), "y").astype(np.float64)
    x64 = xv.astype(np.float64)
    want = x64 / np.sqrt((x64**2).mean(axis=1, keepdims=True) + 1e-5) * wv.reshape(1, C, 1, 1)
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)


# --------------------------------------------------------------------------------------------
# 3. causal attention


def causal_mask() -> np.ndarray:
    return np.triu(np.full((S, S), -65504.0), k=1).astype(f16).reshape(1, 1, S, S)


def attention(b: Builder, q: Var, k: Var, v: Var) -> tuple[Var, Var]:
    """Explicit causal attention and the fused SDPA op on [1, C, 1, S] projections."""

    def heads(t: Var, tag: str) -> Var:
        r = b.reshape(t, shape=[1, HEADS, D, S], name=f"{tag}_r")
        return b.transpose(r, perm=[0, 1, 3, 2], name=f"{tag}_h")  # [1, H, S, D]

    qh, kh, vh = heads(q, "q"), heads(k, "k"), heads(v, "v")
    mask = b.const(causal_mask(), name="mask")
    scores = b.matmul(qh, kh, transpose_y=True, name="scores")
    scaled = b.mul(scores, f16(1.0 / np.sqrt(D)), name="scaled")
    masked = b.add(scaled, mask, name="masked")
    probs = b.softmax(masked, axis=-1, name="probs")
    ctx = b.matmul(probs, vh, name="ctx")
    sdpa = b.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, name="sdpa")

    def merge(t: Var, tag: str) -> Var:
        t = b.transpose(t, perm=[0, 1, 3, 2], name=f"{tag}_t")
        return b.reshape(t, shape=[1, C, 1, S], name=tag)

    return merge(ctx, "attn"), merge(sdpa, "attn_sdpa")


def test_causal_attention(tmp_path: Path) -> None:
    b = Builder("ios18")
    x = b.input("x", FP16, [1, C, 1, S])
    q, k, v = (b.conv(x, rand(C, C, 1, 1), name=n) for n in ("q", "k", "v"))
    explicit, fused = attention(b, q, k, v)
    out = b.conv(b.concat([explicit, fused], axis=1, name="both"), rand(C, 2 * C, 1, 1), name="o")
    b.returns(out)
    crosscheck(b.program(), tmp_path)


def test_causal_attention_values_match_numpy() -> None:
    qv, kv, vv = (rand(1, C, 1, S, scale=1.0) for _ in range(3))
    b = Builder("ios18")
    q, k, v = (b.const(a, name=n) for a, n in ((qv, "qc"), (kv, "kc"), (vv, "vc")))
    explicit, fused = attention(b, q, k, v)
    b.returns(explicit, fused)
    prog = to_coreml_program(b.program())

    def heads(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float64).reshape(HEADS, D, S).transpose(0, 2, 1)

    scores = heads(qv) @ heads(kv).transpose(0, 2, 1) / np.sqrt(D)
    scores = np.where(np.triu(np.ones((S, S), bool), k=1), -np.inf, scores)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    want = (probs @ heads(vv)).transpose(0, 2, 1).reshape(1, C, 1, S)
    for name in ("attn", "attn_sdpa"):
        got = their_val(prog, name).astype(np.float64)
        np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2, err_msg=name)


def test_parsed_text_translates_too() -> None:
    """Programs read back from MIL text (inline literals, no builder) translate the same way."""
    b = Builder("ios16")
    x = b.input("x", FP16, [1, C, 1, S])
    q, k, v = (b.conv(x, rand(C, C, 1, 1), name=n) for n in ("q", "k", "v"))
    scores = b.matmul(q, k, transpose_x=True, name="scores")
    b.returns(b.matmul(v, b.softmax(scores, axis=-1, name="probs"), name="ctx"))
    parsed = parse_program(print_program(b.program()))
    assert compare_types(parsed, to_coreml_program(parsed)) == []


# --------------------------------------------------------------------------------------------
# 4. int8


def int8_weight(b: Builder, shape: tuple[int, ...], name: str) -> Var:
    q = RNG.integers(-127, 128, size=shape, dtype=np.int8)
    scale = (RNG.random(shape[0]) * 0.01 + 0.001).astype(f16)
    return b.constexpr_affine_dequantize(
        quantized_data=q, zero_point=np.zeros(shape[0], np.int8), scale=scale, axis=0, name=name
    )


def test_int8_dequantize_conv_and_quantize_pair(tmp_path: Path) -> None:
    b = Builder("ios18")
    x = b.input("x", FP16, [1, C, 1, S])
    h = b.conv(x, int8_weight(b, (C, C, 1, 1), "w_deq"), name="c0")
    q = b.quantize(h, scale=f16(0.05), zero_point=np.int8(0), output_dtype="int8", name="q")
    dq = b.dequantize(q, scale=f16(0.05), zero_point=np.int8(0), name="dq")
    qc = b.quantize(
        dq,
        scale=np.full(C, 0.05, f16),
        zero_point=np.full(C, 128, np.uint8),
        axis=1,
        output_dtype="uint8",
        name="q_per_channel",
    )
    y = b.dequantize(
        qc,
        scale=np.full(C, 0.05, np.float32),
        zero_point=np.full(C, 128, np.uint8),
        axis=1,
        name="y32",
    )
    b.returns(b.cast(y, dtype="fp16", name="y"))
    program = b.program()
    assert q.type.dtype is INT8 and qc.type.dtype is UINT8 and y.type.dtype is FP32
    crosscheck(program, tmp_path)


def test_int8_dequantize_ios16(tmp_path: Path) -> None:
    """constexpr_affine_dequantize exists from iOS16, the M1/M2 dialect."""
    b = Builder("ios16")
    x = b.input("x", FP16, [1, C, 1, S])
    y = b.conv(x, int8_weight(b, (C, C, 1, 1), "w_deq"), name="c0")
    b.returns(b.softmax(y, axis=1, name="y"))
    program = b.program()
    prog = crosscheck(program, tmp_path)
    assert prog.functions["main"].opset_version == ct.target.iOS16  # type: ignore[attr-defined]


def test_dequantize_values_match_numpy() -> None:
    data = np.array([[-128, -1, 0, 127]], np.int8)
    b = Builder("ios18")
    xq = b.const(data, name="xq")
    b.returns(b.dequantize(xq, scale=f16(0.5), zero_point=np.int8(-2), name="y"))
    prog = to_coreml_program(b.program())
    (op,) = prog.functions["main"].find_ops(op_type="dequantize")  # type: ignore[attr-defined]
    got = op.materialized_val_inference()  # dequantize has no value_inference, only this
    np.testing.assert_array_equal(got, (data.astype(np.float64) + 2) * 0.5)


# --------------------------------------------------------------------------------------------
# translation API and negative tests


def test_every_registry_op_is_translated() -> None:
    assert set(REGISTRY) <= TRANSLATED_OPS
    assert all(hasattr(mb, op) for op in TRANSLATED_OPS)


def test_opset_names_and_override() -> None:
    assert coreml_target("ios16") == ct.target.iOS16
    assert coreml_target("ios18") == ct.target.iOS18
    assert coreml_target(ct.target.iOS17) == ct.target.iOS17
    with pytest.raises(CoreMLError, match="ios99"):
        coreml_target("ios99")
    b = Builder("ios16")
    b.returns(b.exp(b.input("x", FP16, [1, C, 1, S])))
    prog = to_coreml_program(b.program(), opset="ios17")
    assert prog.functions["main"].opset_version == ct.target.iOS17


def test_type_mismatch_is_reported() -> None:
    b = Builder("ios18")
    x = b.input("x", FP16, [1, C, 1, S])
    s = b.reduce_sum(x, axes=[1], keep_dims=True, name="s")
    b.returns(b.softmax(s, axis=-1, name="y"))
    program = b.program()
    prog = to_coreml_program(program)
    assert compare_types(program, prog) == []

    s.type = TensorType(FP16, (1, C, 1, S))  # as if our reduce_sum forgot keep_dims
    program.main.outputs[0].type = TensorType(FP32, (1, 1, 1, S))
    problems = compare_types(program, prog)
    assert problems == [
        "%s (reduce_sum): ours tensor<fp16, [1, 32, 1, 16]>, "
        "coremltools tensor<fp16, [1, 1, 1, 16]>",
        "%y (softmax): ours tensor<fp32, [1, 1, 1, 16]>, coremltools tensor<fp16, [1, 1, 1, 16]>",
    ]
    with pytest.raises(CoreMLError, match="2 type"):
        assert_types_match(program, prog)


def test_rejected_op_raises_clear_error() -> None:
    b = Builder("ios18")
    x = b.input("x", FP16, [1, C, 1, S])
    i = b.input("i", INT32, [1, C, 1, S])
    y = b.add(x, x, name="y")
    b.returns(y)
    program = b.program()
    y.op.inputs["y"] = i  # type: ignore[union-attr]  # fp16 + int32: coremltools must refuse
    with pytest.raises(CoreMLError, match="coremltools rejected add 'y'"):
        to_coreml_program(program)


def test_untranslatable_op_raises() -> None:
    b = Builder("ios18")
    x = b.input("x", FP16, [1, C, 1, S])
    b.returns(b.exp(x, name="y"))
    program = b.program()
    program.main.operations[0].op_type = "gelu_approx"
    with pytest.raises(CoreMLError, match="no coremltools translation"):
        to_coreml_program(program)
    assert issubclass(CoreMLError, AnetrainError)


def test_export_rejects_bad_suffix(tmp_path: Path) -> None:
    b = Builder("ios18")
    b.returns(b.exp(b.input("x", FP16, [1, C, 1, S])))
    with pytest.raises(CoreMLError, match=r"\.mlpackage"):
        export_mlpackage(b.program(), tmp_path / "model.mlmodel")


def test_module_imports_without_coremltools() -> None:
    code = (
        "import sys; sys.modules['coremltools'] = None\n"
        "import anetrain.mil.coreml as m\n"
        "try:\n    m.coreml_target('ios18')\nexcept m.CoreMLError as e:\n    print('ok', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok coremltools is not installed")


# --------------------------------------------------------------------------------------------
# agreement probe: whenever our registry accepts an op, coremltools must accept it with the
# same type. Known disagreements are strict xfails naming the rule coremltools applies, so a fix
# in ops.py shows up as XPASS and the marker must be removed.

Case = Callable[[Builder], Var]


def _x(b: Builder, shape: tuple[int, ...] = (1, C, 1, S), dtype=FP16, name: str = "x") -> Var:
    return b.input(name, dtype, shape)


def _reason(reason: str) -> tuple[pytest.MarkDecorator, ...]:
    """Documents the coremltools rule a rejected case follows (no effect on the outcome)."""
    return ()


AGREEMENT: list = [
    pytest.param(
        "ios18",
        lambda b: b.reshape(_x(b), shape=[0, 0, S]),
        id="reshape_zero_right_aligned",
        marks=_reason("coremltools: iOS17+ reshape aligns 0s from the right (-> [32, 1, 16])"),
    ),
    pytest.param(
        "ios18",
        lambda b: b.concat([_x(b), _x(b, name="y")], axis=1, interleave=True),
        id="concat_interleave",
    ),
    pytest.param(
        "ios18",
        lambda b: b.slice_by_size(_x(b), begin=[0, 8, 0, -4], size=[1, -1, 1, 2]),
        id="slice_by_size",
    ),
    pytest.param(
        "ios18",
        lambda b: b.slice_by_index(
            _x(b),
            begin=[0, 31, 0, 0],
            end=[1, 0, 1, S],
            stride=[1, -2, 1, 3],
            begin_mask=[False, False, True, False],
            squeeze_mask=[True, False, False, False],
        ),
        id="slice_by_index_masks",
    ),
    pytest.param("ios18", lambda b: b.reduce_mean(_x(b), keep_dims=True), id="reduce_all_axes"),
    pytest.param(
        "ios18", lambda b: b.reduce_max(_x(b, dtype=INT32), axes=[-1, 1]), id="reduce_int32"
    ),
    pytest.param(
        "ios18",
        lambda b: b.matmul(_x(b, (2, 1, 8, S)), _x(b, (3, S, 4), name="y")),
        id="matmul_bcast",
    ),
    pytest.param(
        "ios18",
        lambda b: b.matmul(
            _x(b, (1, 4, S, 8)), _x(b, (1, 4, 5, S), name="y"), transpose_x=True, transpose_y=True
        ),
        id="matmul_transposes",
    ),
    pytest.param(
        "ios18",
        lambda b: b.conv(_x(b), np.ones((C, C, 1, 3), f16), pad_type="same"),
        id="conv_same",
    ),
    pytest.param(
        "ios18",
        lambda b: b.conv(_x(b), np.ones((C, C, 1, 4), f16), pad_type="same_lower", strides=[1, 3]),
        id="conv_same_lower_strided",
    ),
    pytest.param(
        "ios18",
        lambda b: b.conv(
            _x(b), np.ones((C, C, 1, 3), f16), pad_type="custom", pad=[0, 0, 1, 1], dilations=[1, 2]
        ),
        id="conv_custom_dilated",
    ),
    pytest.param(
        "ios18", lambda b: b.rsqrt(_x(b, dtype=FP32), epsilon=np.float32(1e-3)), id="rsqrt_eps"
    ),
    pytest.param("ios18", lambda b: b.log(_x(b), epsilon=f16(1e-3)), id="log_eps"),
    pytest.param("ios18", lambda b: b.tanh(b.sigmoid(b.sqrt(b.exp(_x(b))))), id="unary_chain"),
    pytest.param(
        "ios18", lambda b: b.real_div(_x(b), np.ones((C, 1, 1), f16)), id="real_div_bcast"
    ),
    pytest.param("ios18", lambda b: b.cast(_x(b), dtype="int8"), id="cast_int8_ios18"),
    pytest.param("ios16", lambda b: b.cast(_x(b), dtype="int32"), id="cast_int32_ios16"),
    pytest.param(
        "ios18",
        lambda b: b.scaled_dot_product_attention(
            _x(b, (1, 4, S, 8)),
            _x(b, (1, 4, 12, 8), name="k"),
            _x(b, (1, 4, 12, 4), name="v"),
            attn_mask=np.zeros((S, 12), bool),
        ),
        id="sdpa_bool_mask",
    ),
]

# Cases coremltools refuses (or types wrongly); our registry must refuse them too.
REJECTED: list = [
    pytest.param(
        "ios18",
        lambda b: b.quantize(_x(b), scale=f16(0.1), axis=1, output_dtype="int8"),
        id="quantize_scalar_scale_with_axis",
        marks=_reason("coremltools: 'axis' must be absent when scale/zero_point are scalars"),
    ),
    pytest.param(
        "ios18",
        lambda b: b.quantize(_x(b), scale=np.array([0.1], f16), output_dtype="int8"),
        id="quantize_vector_scale_without_axis",
        marks=_reason("coremltools: a rank-1 scale (even of size 1) needs 'axis'"),
    ),
    pytest.param(
        "ios18",
        lambda b: b.quantize(
            _x(b), scale=np.full(C, 0.1, f16), zero_point=np.int8(0), axis=1, output_dtype="int8"
        ),
        id="quantize_vector_scale_scalar_zero_point",
        marks=_reason(
            "coremltools: zero_point must have the rank of scale (both scalar or both vector)"
        ),
    ),
    pytest.param(
        "ios18",
        lambda b: b.quantize(_x(b), scale=f16(0.0), output_dtype="int8"),
        id="quantize_zero_scale",
        marks=_reason("coremltools: quantize scale cannot be 0"),
    ),
    pytest.param(
        "ios18",
        lambda b: b.dequantize(
            b.quantize(_x(b), scale=f16(0.1), output_dtype="int8"), scale=f16(0.1), axis=1
        ),
        id="dequantize_scalar_scale_with_axis",
        marks=_reason("coremltools: 'axis' must be absent when scale/zero_point are scalars"),
    ),
    pytest.param(
        "ios18",
        lambda b: b.conv(
            _x(b),
            b.constexpr_affine_dequantize(
                quantized_data=np.ones((C, C, 1, 1), np.int8),
                zero_point=np.zeros(1, np.int8),
                scale=f16(0.1),
                axis=0,
            ),
        ),
        id="constexpr_dequantize_size1_vector",
        marks=_reason(
            "coremltools: a rank-1 scale/zero_point must have shape[axis] entries; "
            "size 1 is not broadcast"
        ),
    ),
    pytest.param(
        "ios16",
        lambda b: b.cast(_x(b), dtype="int8"),
        id="cast_int8_ios16",
        marks=_reason(
            "coremltools: iOS15/16 cast supports only fp16/fp32/int32/bool (int8/uint8 from iOS17)"
        ),
    ),
    pytest.param(
        "ios16",
        lambda b: b.reshape(_x(b, dtype=INT8), shape=[C, S]),
        id="reshape_int8_ios16",
        marks=_reason(
            "coremltools: iOS15/16 reshape, slice_by_size and cast inputs take "
            "fp16/fp32/int32/bool only (int8/uint8 from iOS17)"
        ),
    ),
    pytest.param(
        "ios18",
        lambda b: b.add(_x(b, dtype=INT8), np.int8(1)),
        id="add_int8",
        marks=_reason(
            "coremltools: elementwise binary ops take fp16/fp32/int32 only (no int8/uint8/bool)"
        ),
    ),
    pytest.param(
        "ios18",
        lambda b: b.reduce_sum(_x(b, dtype=UINT8), axes=[1]),
        id="reduce_sum_uint8",
        marks=_reason("coremltools: reductions take fp16/fp32/int32 only"),
    ),
    pytest.param(
        "ios16",
        lambda b: b.conv(
            _x(b),
            np.ones((C, C, 1, 1), f16),
            bias=b.reduce_sum(b.reshape(_x(b, (C, S), name="bsrc"), shape=[C, S]), axes=[1]),
        ),
        id="conv_runtime_bias_ios16",
        marks=_reason(
            "coremltools: iOS15/16 conv bias must be a compile-time constant (runtime from iOS17)"
        ),
    ),
    pytest.param(
        "ios18",
        lambda b: b.conv(_x(b), np.ones((C, C, 1, 1), f16), bias=np.ones(C, np.float32)),
        id="conv_bias_dtype",
        marks=_reason("coremltools: conv bias dtype must equal weight dtype"),
    ),
    pytest.param(
        "ios16",
        lambda b: b.reshape(_x(b), shape=[0, 0, S]),
        id="reshape_zero_rank_change_ios16",
        marks=_reason("coremltools: iOS15/16 reshape with a 0 requires len(shape) == rank(x)"),
    ),
    pytest.param(
        "ios18",
        lambda b: b.scaled_dot_product_attention(
            _x(b, (1, 4, S, 8)), _x(b, (1, 1, S, 8), name="k"), _x(b, (1, 1, S, 8), name="v")
        ),
        id="sdpa_batch_broadcast",
        marks=_reason(
            "coremltools: query/key/value must have identical rank and batch dims (no broadcast)"
        ),
    ),
    pytest.param(
        "ios18",
        lambda b: b.scaled_dot_product_attention(
            *(3 * [_x(b, (1, 4, S, 8))]), attn_mask=np.zeros((S, 1), f16)
        ),
        id="sdpa_mask_broadcast_keys",
        marks=_reason("coremltools: attn_mask.shape[-1] must equal the key length (no broadcast)"),
    ),
    pytest.param(
        "ios18",
        lambda b: b.scaled_dot_product_attention(
            *(3 * [_x(b, (1, 4, S, 8))]), attn_mask=np.zeros((S, S), np.int32)
        ),
        id="sdpa_mask_int32",
        marks=_reason("coremltools: attn_mask dtype must be bool/fp16/fp32"),
    ),
    pytest.param(
        "ios18",
        lambda b: b.slice_by_size(_x(b), begin=[0, -8, 0, 0], size=[1, -1, 1, S]),
        id="slice_by_size_negative_begin_to_end",
        marks=_reason(
            "coremltools bug: size -1 with a negative begin infers dim - begin (40, not 8); "
            "its value inference wraps begin correctly"
        ),
    ),
    pytest.param(
        "ios18",
        lambda b: b.matmul(_x(b, (S,)), _x(b, (S, 8), name="y"), transpose_x=True),
        id="matmul_rank1_transpose",
        marks=_reason("coremltools: transpose_x on a rank-1 x is an error; ours ignores it"),
    ),
    pytest.param(
        "ios18",
        lambda b: b.matmul(_x(b, (S,)), _x(b, (4, S, 8), name="y")),
        id="matmul_rank1_x_batched_y",
        marks=_reason("coremltools bug: rank-1 x with batched y infers [1, 8] instead of [4, 8]"),
    ),
    pytest.param(
        "ios18",
        lambda b: b.matmul(_x(b, (4, 8, S)), _x(b, (S,), name="y")),
        id="matmul_rank1_y",
        marks=_reason("coremltools: rank-1 y raises IndexError in type inference"),
    ),
]


@pytest.mark.parametrize(("target", "build"), AGREEMENT)
def test_registry_agrees_with_coremltools(target: str, build: Case) -> None:
    b = Builder(target)
    b.returns(build(b))
    program = b.program()
    assert compare_types(program, to_coreml_program(program)) == []


@pytest.mark.parametrize(("target", "build"), REJECTED)
def test_registry_rejects_what_coremltools_rejects(target: str, build: Case) -> None:
    with pytest.raises(MILTypeError):
        build(Builder(target))
