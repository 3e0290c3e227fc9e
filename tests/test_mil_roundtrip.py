"""MIL text round trips: print(parse(print(p))) == print(p) for random programs in both dialects,
re-targeting ios18 <-> ios16, float and string literal spelling, and the seed's verbatim texts
(maderix/ANE inmem_bench.m, gen_softmax_vocab, gen_dyn_matmul_mil,
ane_int8_bench.m) parse and reproduce token for token.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from anetrain.errors import MILTypeError
from anetrain.kernels.dyn_matmul import dyn_matmul_program
from anetrain.mil import (
    FP16,
    FP32,
    INT8,
    INT32,
    STRING,
    BlobRef,
    Builder,
    TensorType,
    parse_program,
    print_program,
)
from mil_strategies import (
    IOS16_KINDS,
    IOS18_ONLY_KINDS,
    BuiltProgram,
    assert_programs_equal,
    programs,
    string_values,
    var_types,
)
from seed_mil import FOOTER, HEADER, SEED_DYN_MATMUL, SEED_EXAMPLE_A, SEED_EXAMPLE_B, SEED_INT8

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|->|[A-Za-z_][A-Za-z0-9_]*|[0-9][0-9.]*|\S')


def tokens(text: str) -> list[str]:
    """Tokens with all whitespace dropped (an independent tokenizer, not the parser's)."""
    return _TOKEN.findall(text)


def wrap(function_text: str) -> str:
    return HEADER + function_text + FOOTER


_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')
_COMPACT_SCALAR = re.compile(r"(?<![\w<])(fp16|fp32|int8|uint8|int32|uint64|bool|string)\(")


def check_round_trip(built: BuiltProgram) -> str:
    text = print_program(built.program)
    parsed = parse_program(text)
    assert print_program(parsed) == text
    assert var_types(parsed) == var_types(built.program)
    assert_programs_equal(built.program, parsed)
    return text


# ---- random programs ------------------------------------------------------------------------


@SETTINGS
@given(programs("ios18"))
def test_random_ios18_programs_round_trip(built: BuiltProgram) -> None:
    text = check_round_trip(built)
    assert text.startswith("program(1.3)\n")
    assert "func main<ios18>(" in text


@SETTINGS
@given(programs("ios16"))
def test_random_ios16_programs_round_trip(built: BuiltProgram) -> None:
    text = check_round_trip(built)
    assert text.startswith("program(1.0)\n")
    assert "func main<ios16>(" in text
    # program(1.0) spells every scalar as tensor<dtype, []>
    assert not _COMPACT_SCALAR.search(_STRING_LITERAL.sub('""', text))


@SETTINGS
@given(programs("ios18", ios16_ops_only=True))
def test_retarget_ios18_ios16_ios18(built: BuiltProgram) -> None:
    t18 = print_program(built.program)
    t16 = print_program(built.program, "ios16")
    assert t16.startswith("program(1.0)\n") and "func main<ios16>(" in t16
    assert not _COMPACT_SCALAR.search(_STRING_LITERAL.sub('""', t16))
    parsed16 = parse_program(t16)
    assert print_program(parsed16) == t16
    assert print_program(parsed16, "ios18") == t18
    assert print_program(parse_program(t18), "ios16") == t16
    assert var_types(parsed16) == var_types(built.program)
    assert_programs_equal(built.program, parsed16, check_version=False)


@pytest.mark.parametrize("kind", IOS16_KINDS + IOS18_ONLY_KINDS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_each_op_kind_round_trips(kind: str, data: st.DataObject) -> None:
    targets = ["ios18"] if kind in IOS18_ONLY_KINDS else ["ios18", "ios16"]
    target = data.draw(st.sampled_from(targets), label="target")
    built = data.draw(programs(target, kinds=(kind,), max_ops=3), label="program")
    # generators skip when no operand fits (e.g. conv needs a rank-4 input); don't count those
    assume(kind == "scalar_consts" or set(built.op_types) - {"const"})
    check_round_trip(built)


@SETTINGS
@given(programs("ios18"))
def test_printing_is_idempotent_through_parse(built: BuiltProgram) -> None:
    once = parse_program(print_program(built.program))
    twice = parse_program(print_program(once))
    assert_programs_equal(once, twice)


def test_ios18_only_ops_cannot_be_printed_for_ios16() -> None:
    b = Builder("ios18")
    q = b.input("q", FP16, [1, 2, 3, 4])
    b.returns(b.scaled_dot_product_attention(q, q, q, name="attn"))
    with pytest.raises(Exception, match=r"attn.*scaled_dot_product_attention.*ios18"):
        print_program(b.program(), "ios16")


# ---- literal spelling -----------------------------------------------------------------------


def _const_program(value: object, dtype=None, target: str = "ios18"):
    b = Builder(target)
    b.input("x", FP16, [1])
    c = b.const(value, name="c", dtype=dtype)
    b.returns(c)
    return b.program()


def _round_trip_value(program) -> object:
    text = print_program(program)
    parsed = parse_program(text)
    assert print_program(parsed) == text
    return parsed.main.vars()["c"].value


def test_every_fp16_value_round_trips() -> None:
    bits = np.arange(1 << 16, dtype=np.uint16)
    values = bits.view(np.float16)
    values = values[~np.isnan(values)]
    back = _round_trip_value(_const_program(values))
    assert back.dtype == np.float16
    np.testing.assert_array_equal(back.view(np.uint16), values.view(np.uint16))


def test_random_fp32_bit_patterns_round_trip() -> None:
    rng = np.random.default_rng(1234)
    values = rng.integers(0, 1 << 32, 50_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = values[~np.isnan(values)]
    back = _round_trip_value(_const_program(values))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back.view(np.uint32), values.view(np.uint32))


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.tuples(st.just(FP16), st.floats(width=16)),
        st.tuples(st.just(FP32), st.floats(width=32)),
    ),
    st.sampled_from(["ios18", "ios16"]),
)
def test_float_scalars_round_trip(case: tuple, target: str) -> None:
    dtype, value = case
    back = np.asarray(_round_trip_value(_const_program(dtype.numpy.type(value), target=target)))
    assert back.dtype == dtype.numpy and back.shape == ()
    if np.isnan(value):
        assert np.isnan(back)
    else:
        assert back.tobytes() == dtype.numpy.type(value).tobytes()


@pytest.mark.parametrize(
    ("value", "spelled"),
    [
        (1 / 768, "fp16(0.001302)"),  # the RMSNorm 1/D constant, as the seed's %f prints it
        (0.125, "fp16(0.125)"),
        (float("inf"), "fp16(inf)"),
        (float("-inf"), "fp16(-inf)"),
    ],
)
def test_fp16_scalar_spelling(value: float, spelled: str) -> None:
    text = print_program(_const_program(np.float16(value)))
    assert f'fp16 c = const()[name = string("c"), val = {spelled}];' in text


@pytest.mark.parametrize("value", [-65504.0, 2.0**-24, 2.0**-14 - 2.0**-24, -0.0])
def test_fp16_extremes_read_back_exactly(value: float) -> None:
    back = _round_trip_value(_const_program(np.array([value], dtype=np.float16)))
    assert back.view(np.uint16)[0] == np.array([value], dtype=np.float16).view(np.uint16)[0]


@settings(max_examples=100, deadline=None)
@given(string_values, st.sampled_from(["ios18", "ios16"]))
def test_string_literals_round_trip(value: str, target: str) -> None:
    back = _round_trip_value(_const_program(value, target=target))
    assert back == value


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(string_values, string_values, max_size=4), st.sampled_from(["1.3", "1.0"]))
def test_build_info_round_trips(info: dict[str, str], version: str) -> None:
    b = Builder("ios18" if version == "1.3" else "ios16")
    x = b.input("x", FP16, [2])
    b.returns(x)
    text = print_program(b.program(info))
    parsed = parse_program(text)
    assert parsed.build_info == info
    assert print_program(parsed) == text


def test_quoted_string_spelling() -> None:
    text = print_program(_const_program('a"b\\c\nd'))
    assert r'val = string("a\"b\\c\nd")' in text


# ---- the seed's texts -----------------------------------------------------------------------


def test_dyn_matmul_matches_seed_token_for_token() -> None:
    built = print_program(dyn_matmul_program(768, 2048, 256))
    assert tokens(built) == tokens(wrap(SEED_DYN_MATMUL))


def test_seed_dyn_matmul_text_parses_to_the_built_program() -> None:
    seed = wrap(SEED_DYN_MATMUL)
    parsed = parse_program(seed)
    built = dyn_matmul_program(768, 2048, 256)
    assert var_types(parsed) == var_types(built)
    assert var_types(parsed)["mm_a3"] == TensorType(FP16, (1, 1, 256, 768))
    assert var_types(parsed)["mm_yh"] == TensorType(FP16, (1, 1, 256, 2048))
    assert [v.name for v in parsed.main.outputs] == ["mm_y"]
    assert_programs_equal(parsed, built)
    assert print_program(parsed) == print_program(built)
    assert tokens(print_program(parsed)) == tokens(seed)


def test_seed_example_a_round_trips_exactly() -> None:
    text = wrap(SEED_EXAMPLE_A)
    parsed = parse_program(text)
    types = var_types(parsed)
    assert types["x"] == TensorType(FP32, (1, 256, 1, 64))
    assert types["x16"] == TensorType(FP16, (1, 256, 1, 64))
    assert types["y16"] == TensorType(FP16, (1, 256, 1, 64))
    assert types["y"] == TensorType(FP32, (1, 256, 1, 64))
    assert types["c_pad_type"] == TensorType(STRING, ())
    assert types["c_groups"] == TensorType(INT32, ())
    ops = {op.outputs[0].name: op for op in parsed.main.operations}
    assert ops["y16"].name == "conv" and ops["x16"].name == "cast_in"
    assert list(ops["y16"].inputs) == [
        "dilations",
        "groups",
        "pad",
        "pad_type",
        "strides",
        "weight",
        "x",
    ]
    assert parsed.main.blob_refs() == [BlobRef("@model_path/weights/weight.bin", 64)]
    assert parsed.main.vars()["c_pad_type"].value == "valid"
    # The benchmark spells statements exactly as our printer does.
    assert print_program(parsed) == text


def test_seed_example_b_parses_and_reprints() -> None:
    text = wrap(SEED_EXAMPLE_B)
    parsed = parse_program(text)
    assert var_types(parsed)["out"] == TensorType(FP16, (1, 32000, 1, 256))
    assert int(parsed.main.vars()["ax"].value) == 1
    assert parsed.main.operations[-1].name == "sm"
    assert tokens(print_program(parsed)) == tokens(text)


def test_seed_int8_syntax_parses() -> None:
    text = wrap(SEED_INT8)
    parsed = parse_program(text)
    types = var_types(parsed)
    assert types["W0"] == TensorType(FP16, (64, 64, 1, 1))
    assert types["q0"] == TensorType(INT8, (1, 64, 64, 64))
    assert types["dq0"] == TensorType(FP16, (1, 64, 64, 64))
    assert types["c1"] == TensorType(FP16, (1, 64, 64, 64))
    w0 = parsed.main.operations[0]
    assert w0.op_type == "constexpr_affine_dequantize"
    assert w0.inputs == {}
    assert list(w0.attributes) == ["axis", "name", "quantized_data", "scale", "zero_point"]
    assert float(w0.attributes["scale"].value) == 0.125  # fp16(0x1p-3)
    assert int(w0.attributes["zero_point"].value) == 0
    assert w0.attributes["zero_point"].type == TensorType(INT8, ())
    assert parsed.main.blob_refs() == [
        BlobRef("@model_path/weights/weight.bin", 64),
        BlobRef("@model_path/weights/weight.bin", 64 + (64 + 64 * 64)),
    ]
    assert float(parsed.main.vars()["q_scale"].value) == 0.125
    # Re-printing spells the hex float in decimal; the result is stable and equivalent.
    printed = print_program(parsed)
    assert "fp16(0.125)" in printed and "0x1p-3" not in printed
    reparsed = parse_program(printed)
    assert print_program(reparsed) == printed
    assert_programs_equal(parsed, reparsed)


def test_seed_texts_parse_in_no_space_style() -> None:
    squeezed = re.sub(r"\s*([=,()\[\]<>{};])\s*", r"\1", SEED_EXAMPLE_A)
    squeezed = squeezed.replace("func main", "\nfunc main")
    parsed = parse_program(wrap(squeezed))
    assert print_program(parsed) == wrap(SEED_EXAMPLE_A)


def test_retargeting_to_ios16_rechecks_dtype_rules() -> None:
    b = Builder("ios18")
    x = b.input("x", FP16, [2, 3])
    b.returns(b.cast(x, "int8", name="y"))  # int8 tensors need ios17
    try:
        text = print_program(b.program(), "ios16")
    except MILTypeError as err:
        assert "int8" in str(err)
        return
    parse_program(text)  # what we print must at least parse
