"""The Builder: unique names, Python values as const statements, defaults, atomic failure,
opset gating and the return requirement."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anetrain.errors import MILTypeError
from anetrain.mil import (
    BOOL,
    FP16,
    FP32,
    INT8,
    INT32,
    STRING,
    BlobRef,
    Builder,
    TensorType,
    Var,
    parse_program,
    print_program,
)
from mil_strategies import identifiers


def consts(b: Builder) -> dict[str, Any]:
    """name -> value of every const statement so far."""
    return {
        op.outputs[0].name: op.attributes["val"].data
        for op in b.function.operations
        if op.op_type == "const"
    }


def statement_names(b: Builder) -> list[str]:
    return [op.outputs[0].name for op in b.function.operations]


# ---- names ----------------------------------------------------------------------------------

ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["add", "mul", "softmax", "const", "explicit"]),
        st.one_of(
            st.sampled_from(["x", "add", "add_1", "add_2", "mul_1", "const", "add_y", "s"]),
            identifiers,
        ),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(ACTIONS)
def test_names_are_unique(actions: list[tuple[str, str]]) -> None:
    b = Builder()
    x = b.input("x", FP16, [2, 3])
    used = {"x"}
    last = x
    for kind, name in actions:
        before = statement_names(b)
        if kind == "explicit":
            if name in used:
                with pytest.raises(ValueError, match=rf"name '{name}' is already used"):
                    b.add(x, last, name=name)
                assert statement_names(b) == before
                continue
            last = b.add(x, last, name=name)
            assert last.name == name
        elif kind == "const":
            last_const = b.const(np.float16(1))
            assert last_const.name == "const" or last_const.name.startswith("const_")
        else:
            last = b.op(kind, x) if kind == "softmax" else b.op(kind, x, last)
            assert last.name == kind or last.name.startswith(f"{kind}_")
        used.update(statement_names(b)[len(before) :])
    names = ["x", *statement_names(b)]
    assert len(names) == len(set(names))
    b.returns(last)
    text = print_program(b.program())
    assert print_program(parse_program(text)) == text  # the parser rejects redefinitions


def test_auto_names_count_up_and_skip_taken_ones() -> None:
    b = Builder()
    x = b.input("x", FP16, [2])
    assert b.add(x, x).name == "add"
    b.add(x, x, name="add_1")
    assert b.add(x, x).name == "add_2"
    assert b.add(x, x).name == "add_3"
    assert b.unique("add") == "add_4"
    assert b.unique("fresh") == "fresh"


def test_explicit_duplicate_raises_and_adds_nothing() -> None:
    b = Builder()
    x = b.input("x", FP16, [2])
    b.add(x, x, name="y")
    before = print_program(_finish(b, x))
    with pytest.raises(ValueError, match=r"name 'y' is already used"):
        b.mul(x, 2.0, name="y")
    with pytest.raises(ValueError, match=r"name 'x' is already used"):
        b.const(1.0, name="x")
    with pytest.raises(ValueError, match=r"name 'x' is already used"):
        b.input("x", FP16, [3])
    assert print_program(_finish(b, x)) == before


@pytest.mark.parametrize("name", ["1x", "a-b", "", "a b", "ü", "x.y"])
def test_invalid_identifiers_are_rejected(name: str) -> None:
    b = Builder()
    x = b.input("x", FP16, [2])
    with pytest.raises(ValueError, match=r"invalid MIL identifier"):
        b.add(x, x, name=name)
    with pytest.raises(ValueError, match=r"invalid MIL identifier"):
        b.input(name, FP16, [2])
    assert b.function.operations == []


@pytest.mark.parametrize("name", ["true", "false", "inf", "nan"])
def test_accepted_names_survive_a_round_trip(name: str) -> None:
    b = Builder()
    try:
        x = b.input(name, FP16, [2])
    except ValueError:
        return  # rejecting the name is a fine fix
    b.returns(b.mul(x, x, name="y"))
    text = print_program(b.program())
    assert print_program(parse_program(text)) == text


# ---- Python values become const statements --------------------------------------------------


def test_python_values_become_named_consts_before_the_op() -> None:
    b = Builder()
    x = b.input("x", FP16, [1, 4])
    y = b.add(x, 2.0)
    add_op = b.function.operations[-1]
    const_op = b.function.operations[-2]
    assert const_op.op_type == "const" and const_op.outputs[0].name == "add_y"
    assert const_op.outputs[0].type == TensorType(FP16, ())
    assert float(const_op.attributes["val"].data) == 2.0
    assert add_op.inputs["y"] is const_op.outputs[0]
    assert add_op.inputs["x"] is x and y.op is add_op
    text = print_program(_finish(b, y))
    assert 'fp16 add_y = const()[name = string("add_y"), val = fp16(2.0)];' in text
    assert "add(x = x, y = add_y)" in text


@pytest.mark.parametrize(
    ("value", "dtype", "shape"),
    [
        (3, INT32, ()),
        (True, BOOL, ()),
        (1.5, FP16, ()),
        ([1.5, 2], FP16, (2,)),
        ([1, 2, 3], INT32, (3,)),
        ([[True, False]], BOOL, (1, 2)),
        ("valid", STRING, ()),
        (np.float32(0.5), FP32, ()),
        (np.arange(6, dtype=np.int8).reshape(2, 3), INT8, (2, 3)),
        (np.zeros((2, 1), np.float32), FP32, (2, 1)),
    ],
)
def test_const_dtype_from_value(value: Any, dtype: Any, shape: tuple) -> None:
    b = Builder()
    c = b.const(value)
    assert c.type == TensorType(dtype, shape)
    assert b.function.operations[-1].op_type == "const"
    data = c.value
    if dtype is STRING:
        assert data == value
    else:
        np.testing.assert_array_equal(np.asarray(data), np.asarray(value))


def test_const_with_explicit_dtype() -> None:
    b = Builder()
    assert b.const([0, 1], dtype=FP32).type == TensorType(FP32, (2,))
    assert b.const(1, dtype=FP16).type == TensorType(FP16, ())


def test_op_arguments_of_each_kind_become_consts() -> None:
    b = Builder()
    x = b.input("x", FP16, [2, 2])
    b.reshape(x, [4, 1])
    b.cast(x, "fp32")
    b.matmul(x, x, True)
    b.concat([x, np.zeros((1, 2), np.float16)], 0)
    c = consts(b)
    assert list(c) == [
        "reshape_shape",
        "cast_dtype",
        "matmul_transpose_x",
        "matmul_transpose_y",
        "concat_values_1",
        "concat_axis",
        "concat_interleave",
    ]
    assert c["cast_dtype"] == "fp32"
    np.testing.assert_array_equal(c["reshape_shape"], [4, 1])
    assert c["matmul_transpose_x"].dtype == np.bool_ and bool(c["matmul_transpose_x"])
    assert not bool(c["matmul_transpose_y"]) and not bool(c["concat_interleave"])
    concat = b.function.operations[-1]
    assert [v.name for v in concat.inputs["values"]] == ["x", "concat_values_1"]


def test_defaults_are_materialized_in_seed_order() -> None:
    b = Builder()
    x = b.input("x", FP16, [1, 4, 1, 8])
    w = b.weight("W", FP16, [4, 4, 1, 1], "weight.bin", 64)
    y = b.conv(x, w)
    c = consts(b)
    assert c["conv_pad_type"] == "valid"
    np.testing.assert_array_equal(c["conv_strides"], [1, 1])
    np.testing.assert_array_equal(c["conv_pad"], [0, 0, 0, 0])
    np.testing.assert_array_equal(c["conv_dilations"], [1, 1])
    assert int(c["conv_groups"]) == 1
    assert c["W"] == BlobRef("@model_path/weights/weight.bin", 64)
    conv = b.function.operations[-1]
    # the order maderix/ANE inmem_bench.m prints
    assert list(conv.inputs) == ["dilations", "groups", "pad", "pad_type", "strides", "weight", "x"]
    s = b.softmax(y)
    assert int(consts(b)["softmax_axis"]) == -1
    r = b.reduce_sum(s, [1])
    assert not bool(consts(b)["reduce_sum_keep_dims"])
    assert r.type == TensorType(FP16, (1, 1, 8))
    text = print_program(_finish(b, r))
    assert (
        'tensor<fp16, [4, 4, 1, 1]> W = const()[name = string("W"), val = tensor<fp16, '
        '[4, 4, 1, 1]>(BLOBFILE(path = string("@model_path/weights/weight.bin"), '
        "offset = uint64(64)))];" in text
    )


def test_explicit_var_arguments_are_not_copied() -> None:
    b = Builder()
    x = b.input("x", FP16, [2, 3])
    perm = b.const([1, 0], name="pm", dtype=INT32)
    n = len(b.function.operations)
    t = b.transpose(x, perm)
    assert len(b.function.operations) == n + 1
    assert b.function.operations[-1].inputs["perm"] is perm
    assert t.type == TensorType(FP16, (3, 2))


# ---- failure leaves no trace ----------------------------------------------------------------


def _finish(b: Builder, *outs: Var):
    b.returns(*outs)
    return b.program()


def _no_trace(fail: Callable[[Builder, Var], Any], exc: type[BaseException] = Exception) -> None:
    """Building with a failing call in the middle gives exactly the program built without it."""

    def build(with_failure: bool) -> str:
        b = Builder()
        x = b.input("x", FP16, [1, 4, 1, 4])
        w = b.const(np.zeros((4, 4, 1, 1), np.float16), name="w")
        first = b.add(x, x)
        if with_failure:
            n = len(b.function.operations)
            with pytest.raises(exc):
                fail(b, x)
            assert len(b.function.operations) == n
        # the same names the failing call would have used, explicit and automatic
        y = b.add(first, np.float16(1))
        z = b.conv(y, w)
        q = b.constexpr_affine_dequantize(np.zeros(4, np.int8), np.int8(0), np.float16(1), 0)
        t = b.transpose(z, [0, 1, 3, 2])
        r = b.reshape(t, [1, 16], name="fresh")
        return print_program(_finish(b, r, q))

    assert build(True) == build(False)


def test_failed_inference_leaves_no_trace() -> None:
    _no_trace(lambda b, x: b.conv(x, np.zeros((4, 3, 1, 1), np.float16)), MILTypeError)


def test_failed_inference_with_new_name_leaves_no_trace() -> None:
    _no_trace(lambda b, x: b.reshape(x, [3, 3], name="fresh"), MILTypeError)


def test_failed_auto_named_op_does_not_consume_a_counter() -> None:
    _no_trace(lambda b, x: b.add(x, np.float32(1)), MILTypeError)


@pytest.mark.parametrize(
    "fail",
    [
        pytest.param(
            lambda b, x: b.conv(x, b.function.inputs[0], pad_type=object()), id="bad-value"
        ),
        pytest.param(
            lambda b, x: b.constexpr_affine_dequantize(x, np.int8(0), np.float16(1), 0),
            id="runtime-var-for-inline-constant",
        ),
        pytest.param(lambda b, x: b.transpose(x, [4, 1, 2, 3]), id="non-MILTypeError-in-infer"),
    ],
)
def test_failure_outside_inference_leaves_no_trace(fail: Callable[[Builder, Var], Any]) -> None:
    _no_trace(fail)


def test_argument_errors_leave_no_trace() -> None:
    _no_trace(lambda b, x: b.add(x, x, bogus=1), TypeError)
    _no_trace(lambda b, x: b.add(x, x, x), TypeError)
    _no_trace(lambda b, x: b.add(x, x, y=x), TypeError)
    _no_trace(lambda b, x: b.scaled_dot_product_attention(x, x), MILTypeError)


def test_builder_api_errors() -> None:
    b = Builder()
    with pytest.raises(TypeError, match=r"use Builder.const\(\)"):
        b.op("const", 1)
    with pytest.raises(AttributeError, match=r"Builder has no op 'conv2d'"):
        b.conv2d  # noqa: B018
    with pytest.raises(MILTypeError, match=r"unknown op 'conv2d'"):
        b.op("conv2d")
    with pytest.raises(ValueError, match=r"unknown MIL target 'ios99'"):
        Builder("ios99")


# ---- targets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "needs"),
    [("scaled_dot_product_attention", "ios18"), ("quantize", "ios17"), ("dequantize", "ios17")],
)
def test_ios16_rejects_newer_ops(op: str, needs: str) -> None:
    b = Builder("ios16")
    x = b.input("x", FP16, [1, 2, 3])
    args: dict[str, Any] = {
        "scaled_dot_product_attention": {"query": x, "key": x, "value": x},
        "quantize": {"input": x, "scale": np.float16(1), "output_dtype": "int8"},
        "dequantize": {"input": x, "scale": np.float16(1)},
    }[op]
    with pytest.raises(
        MILTypeError, match=rf"{op} needs opset {needs}, but target ios16 has ios16"
    ):
        b.op(op, **args)
    assert b.function.operations == []
    assert b.softmax(x).name == "softmax"  # still usable


def test_ios16_accepts_constexpr_and_prints_verbose() -> None:
    b = Builder("ios16")
    x = b.input("x", FP16, [4, 2])
    w = b.constexpr_affine_dequantize(np.ones((2, 4), np.int8), np.int8(0), np.float16(0.5), 0)
    y = b.matmul(x, w)
    text = print_program(_finish(b, y))
    assert text.startswith("program(1.0)\n") and "func main<ios16>(" in text
    assert "scale = tensor<fp16, []>(0.5)" in text
    assert "transpose_x = matmul_transpose_x" in text


def test_ios18_accepts_all_ops() -> None:
    b = Builder("ios18")
    x = b.input("x", FP16, [1, 2, 3])
    a = b.scaled_dot_product_attention(x, x, x)
    q = b.quantize(a, scale=np.float16(0.125), output_dtype="int8")
    d = b.dequantize(q, scale=np.float16(0.125))
    assert d.type == TensorType(FP16, (1, 2, 3))


def test_ios16_cast_targets() -> None:
    b = Builder("ios16")
    x = b.input("x", FP16, [2])
    assert b.cast(x, "int32").type == TensorType(INT32, (2,))
    with pytest.raises(MILTypeError, match=r"cannot cast to 'int8' in opset ios16"):
        b.cast(x, "int8")


# ---- returns --------------------------------------------------------------------------------


def test_returns_are_required() -> None:
    b = Builder()
    x = b.input("x", FP16, [2])
    y = b.exp(x)
    with pytest.raises(MILTypeError, match=r"returns nothing; call returns"):
        b.program()
    b.returns()
    with pytest.raises(MILTypeError, match=r"returns nothing"):
        b.program()
    b.returns(y, x)
    program = b.program()
    assert [v.name for v in program.main.outputs] == ["exp", "x"]
    assert print_program(program).endswith("    } -> (exp, x);\n}\n")


def test_program_build_info() -> None:
    b = Builder()
    x = b.input("x", FP16, [2])
    b.returns(x)
    assert b.program().build_info["coremltools-version"] == "9.0"
    assert b.program({"k": 'v"'}).build_info == {"k": 'v"'}
