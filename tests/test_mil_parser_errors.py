"""Parser diagnostics: every syntax and type error names its 1-based line and column.

Each case edits one spot of a small valid program; the expected position is written out as
numbers (and, for the less obvious ones, cross-checked against the offending text's position).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anetrain.errors import MILError, MILSyntaxError, MILTypeError
from anetrain.mil import FP16, TensorType, parse_program, print_program
from mil_strategies import BuiltProgram, programs

# Line 5 holds the first statement; its type starts at column 9 (after 8 spaces of indent).
BASE = """\
program(1.3)
[buildInfo = dict<string, string>({{"coremltools-version", "9.0"}})]
{
    func main<ios18>(tensor<fp16, [1, 4]> x) {
        tensor<fp16, [1, 4]> y = add(x = x, y = x)[name = string("y")];
        tensor<int32, [2]> s = const()[name = string("s"), val = tensor<int32, [2]>([4, 1])];
        tensor<fp16, [4, 1]> z = reshape(shape = s, x = y)[name = string("z")];
    } -> (z);
}
"""


def position(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based (line, col) of the ``occurrence``-th ``needle`` in ``text``."""
    at = -1
    for _ in range(occurrence):
        at = text.index(needle, at + 1)
    line = text.count("\n", 0, at) + 1
    col = at - (text.rfind("\n", 0, at) + 1) + 1
    return line, col


def edit(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def parse_error(text: str, kind: type[MILError] = MILError) -> MILError:
    with pytest.raises(kind) as info:
        parse_program(text)
    err = info.value
    # The position is also part of the message a user sees ("LINE:COL: message").
    assert str(err).startswith(f"{err.line}:{err.col}: ")
    return err


def test_base_program_is_valid() -> None:
    program = parse_program(BASE)
    assert program.main.vars()["z"].type == TensorType(FP16, (4, 1))


# ---- syntax errors --------------------------------------------------------------------------


def test_unexpected_character() -> None:
    text = edit("y = x)[name", "y = $x)[name")
    err = parse_error(text, MILSyntaxError)
    assert (err.line, err.col) == (5, 49) == position(text, "$")
    assert "unexpected character '$'" in err.message


def test_unexpected_character_on_first_line() -> None:
    err = parse_error("program(1.3) ?", MILSyntaxError)
    assert (err.line, err.col) == (1, 14)


def test_unterminated_string() -> None:
    text = edit('string("y")];', 'string("y)];')
    err = parse_error(text, MILSyntaxError)
    assert (err.line, err.col) == position(text, '"y)')
    assert "unexpected character" in err.message


def test_missing_semicolon_reports_the_next_token() -> None:
    text = edit('string("y")];', 'string("y")]')
    err = parse_error(text, MILSyntaxError)
    # The statement ends at the next line's first token.
    assert (err.line, err.col) == (6, 9)
    assert "expected ';'" in err.message and "'tensor'" in err.message


def test_missing_semicolon_after_return_list() -> None:
    text = edit("} -> (z);", "} -> (z)")
    err = parse_error(text, MILSyntaxError)
    assert (err.line, err.col) == (9, 1)
    assert "expected ';'" in err.message


def test_unknown_dtype() -> None:
    text = edit("tensor<fp16, [1, 4]> y", "tensor<fp17, [1, 4]> y")
    err = parse_error(text, MILSyntaxError)
    assert (err.line, err.col) == (5, 16) == position(text, "fp17")
    assert "unknown dtype 'fp17'" in err.message


def test_unknown_scalar_dtype_in_a_literal() -> None:
    text = edit('name = string("y")', 'name = strng("y")')
    err = parse_error(text, MILSyntaxError)
    assert (err.line, err.col) == position(text, "strng")
    assert "strng" in err.message


def test_negative_dimension_in_a_type() -> None:
    text = edit("tensor<fp16, [4, 1]> z", "tensor<fp16, [4, -1]> z")
    err = parse_error(text, MILSyntaxError)
    assert (err.line, err.col) == (7, 26)
    assert "expected a dimension" in err.message


def test_empty_file() -> None:
    err = parse_error("", MILSyntaxError)
    assert (err.line, err.col) == (1, 1)
    assert "program(" in err.message


def test_whitespace_only_file() -> None:
    err = parse_error("\n\n  ", MILSyntaxError)
    assert (err.line, err.col) == (3, 3)


def test_truncated_file() -> None:
    text = BASE[: BASE.index("    } -> (z);")]
    err = parse_error(text, MILSyntaxError)
    assert (err.line, err.col) == (8, 1)
    assert "end of file" in err.message


def test_text_after_the_program() -> None:
    err = parse_error(BASE + "extra\n", MILSyntaxError)
    assert (err.line, err.col) == (10, 1)
    assert "'extra'" in err.message


def test_duplicate_argument() -> None:
    text = edit("add(x = x, y = x)", "add(x = x, x = x)")
    err = parse_error(text, MILSyntaxError)
    assert (err.line, err.col) == (5, 45)
    assert "argument 'x' given twice" in err.message


def test_comments_and_crlf_keep_positions() -> None:
    text = "// a comment line\r\n" + edit("y = x)[name", "y = $x)[name").replace("\n", "\r\n")
    err = parse_error(text, MILSyntaxError)
    assert (err.line, err.col) == (6, 49)


def test_bad_blobfile_missing_offset() -> None:
    text = edit(
        "val = tensor<int32, [2]>([4, 1])",
        'val = tensor<int32, [2]>(BLOBFILE(path = string("@model_path/weights/w.bin")))',
    )
    err = parse_error(text, MILSyntaxError)
    # Points at the ')' that closes BLOBFILE(...).
    assert (err.line, err.col) == (6, 136) == position(text, "))];")
    assert "BLOBFILE needs exactly 'path' and 'offset'" in err.message


def test_bad_blobfile_offset_type() -> None:
    text = edit(
        "val = tensor<int32, [2]>([4, 1])",
        'val = tensor<int32, [2]>(BLOBFILE(path = string("w.bin"), offset = string("64")))',
    )
    err = parse_error(text, MILSyntaxError)
    assert (err.line, err.col) == (6, 139) == position(text, "))];")
    assert "offset an integer" in err.message


def test_bad_blobfile_unknown_field() -> None:
    text = edit(
        "val = tensor<int32, [2]>([4, 1])",
        'val = tensor<int32, [2]>(BLOBFILE(path = string("w.bin"), offset = uint64(64), '
        "size = uint64(8)))",
    )
    err = parse_error(text, MILSyntaxError)
    assert "BLOBFILE needs exactly 'path' and 'offset'" in err.message
    assert err.line == 6


# ---- type errors ----------------------------------------------------------------------------


def test_unknown_op() -> None:
    text = edit("= add(", "= addd(")
    err = parse_error(text, MILTypeError)
    assert (err.line, err.col) == (5, 34) == position(text, "addd")
    assert "unknown op 'addd'" in err.message


def test_undefined_variable() -> None:
    text = edit("add(x = x, y = x)", "add(x = x, y = w)")
    err = parse_error(text, MILTypeError)
    assert (err.line, err.col) == (5, 49) == position(text, "w)")
    assert "undefined variable 'w'" in err.message


def test_use_before_definition() -> None:
    text = edit("reshape(shape = s, x = y)", "reshape(shape = s, x = q)")
    text = edit(
        "    } -> (z);",
        '        tensor<fp16, [1, 4]> q = add(x = x, y = x)[name = string("q")];\n    } -> (z);',
        text,
    )
    err = parse_error(text, MILTypeError)
    assert (err.line, err.col) == (7, 57)
    assert "undefined variable 'q'" in err.message


def test_redefinition() -> None:
    text = edit("tensor<fp16, [4, 1]> z =", "tensor<fp16, [4, 1]> y =")
    text = edit("} -> (z);", "} -> (y);", text)
    err = parse_error(text, MILTypeError)
    assert (err.line, err.col) == (7, 30)
    assert "'y' is defined twice" in err.message


def test_redefining_an_input() -> None:
    text = edit("tensor<fp16, [1, 4]> y = add", "tensor<fp16, [1, 4]> x = add")
    text = edit("x = y)", "x = x)", text)
    err = parse_error(text, MILTypeError)
    assert (err.line, err.col) == (5, 30)
    assert "'x' is defined twice" in err.message


def test_input_declared_twice() -> None:
    text = edit("[1, 4]> x) {", "[1, 4]> x, tensor<fp16, [1]> x) {")
    err = parse_error(text, MILSyntaxError)
    assert (err.line, err.col) == (4, 64)
    assert "input 'x' declared twice" in err.message


def test_declared_type_differs_from_inferred() -> None:
    text = edit("tensor<fp16, [4, 1]> z", "tensor<fp16, [2, 2]> z")
    err = parse_error(text, MILTypeError)
    # Reported at the start of the statement (its declared type).
    assert (err.line, err.col) == (7, 9)
    assert "'z' is declared tensor<fp16, [2, 2]>" in err.message
    assert "reshape produces tensor<fp16, [4, 1]>" in err.message


def test_declared_dtype_differs_from_inferred() -> None:
    text = edit("tensor<fp16, [1, 4]> y", "tensor<fp32, [1, 4]> y")
    err = parse_error(text, MILTypeError)
    assert (err.line, err.col) == (5, 9)
    assert "declared tensor<fp32, [1, 4]>" in err.message


def test_wrong_literal_count() -> None:
    text = edit("tensor<int32, [2]>([4, 1])", "tensor<int32, [2]>([4, 1, 1])")
    err = parse_error(text, MILTypeError)
    # Reported at the literal's type.
    assert (err.line, err.col) == (6, 66) == position(text, "tensor<int32, [2]>([")
    assert "needs 2 values, found 3" in err.message


def test_scalar_given_for_a_tensor_literal() -> None:
    text = edit("tensor<int32, [2]>([4, 1])", "tensor<int32, [2]>(4)")
    err = parse_error(text, MILTypeError)
    assert (err.line, err.col) == (6, 66) == position(text, "tensor<int32, [2]>(4)")
    assert "needs a list of 2 values" in err.message


@pytest.mark.parametrize(
    ("dtype", "value"),
    [("int32", "2147483648"), ("int32", "-2147483649"), ("int8", "128"), ("uint8", "-1")],
)
def test_int_out_of_range(dtype: str, value: str) -> None:
    statement = f'        {dtype} big = const()[name = string("big"), val = {dtype}({value})];\n'
    text = BASE.replace(
        "        tensor<fp16, [4, 1]> z", statement + "        tensor<fp16, [4, 1]> z"
    )
    err = parse_error(text, MILTypeError)
    # the number itself, on the inserted line 7
    assert (err.line, err.col) == (7, 53 + 2 * len(dtype)) == position(text, value + ")")
    assert f"{value} is out of range for {dtype}" in err.message


def test_int_out_of_range_inside_a_list() -> None:
    text = edit("([4, 1])", "([4, 4294967296])")
    err = parse_error(text, MILTypeError)
    assert (err.line, err.col) == (6, 89) == position(text, "4294967296")
    assert "out of range for int32" in err.message


def test_float_where_int_expected() -> None:
    text = edit("([4, 1])", "([4, 1.5])")
    err = parse_error(text, MILTypeError)
    assert (err.line, err.col) == (6, 89) == position(text, "1.5")
    assert "needs an integer" in err.message


def test_missing_required_argument() -> None:
    text = edit("add(x = x, y = x)", "add(x = x)")
    err = parse_error(text, MILTypeError)
    assert (err.line, err.col) == (5, 34)
    assert "missing required parameter 'y'" in err.message


def test_unexpected_argument() -> None:
    text = edit("add(x = x, y = x)", "add(x = x, y = x, z = x)")
    err = parse_error(text, MILTypeError)
    assert (err.line, err.col) == (5, 34)
    assert "unexpected parameter 'z'" in err.message


def test_computed_value_for_a_constant_parameter() -> None:
    text = edit("reshape(shape = s, x = y)", "reshape(shape = y, x = y)")
    err = parse_error(text, MILTypeError)
    assert (err.line, err.col) == (7, 34)
    assert "'shape' must be a constant" in err.message


def test_inference_error_is_located_at_the_op() -> None:
    text = edit("tensor<int32, [2]>([4, 1])", "tensor<int32, [2]>([3, 1])")
    err = parse_error(text, MILTypeError)
    assert (err.line, err.col) == (7, 34)
    assert "cannot reshape [1, 4] (4 elements) to [3, 1] (3 elements)" in err.message


def test_returned_variable_undefined() -> None:
    text = edit("} -> (z);", "} -> (z, nope);")
    err = parse_error(text, MILTypeError)
    assert (err.line, err.col) == (8, 14)
    assert "returned variable 'nope' is not defined" in err.message


def test_function_returns_nothing() -> None:
    text = edit("} -> (z);", "} -> ();")
    err = parse_error(text, MILTypeError)
    assert "function 'main' returns nothing" in err.message


def test_function_returns_nothing_points_at_the_return_list() -> None:
    text = edit("} -> (z);", "} -> ();")
    err = parse_error(text, MILTypeError)
    # anywhere on '} -> ();' is fine; the parser reports the program's closing '}' on line 9
    assert err.line == 8


def test_name_attribute_must_be_a_string() -> None:
    text = edit('[name = string("y")]', "[name = int32(1)]")
    err = parse_error(text, MILTypeError)
    assert (err.line, err.col) == (5, 9)
    assert "'name' attribute must be a string" in err.message


def test_op_newer_than_the_function_opset_is_rejected() -> None:
    text = """\
program(1.0)
[buildInfo = dict<tensor<string, []>, tensor<string, []>>({{"a", "b"}})]
{
    func main<ios16>(tensor<fp16, [1, 3, 4]> q) {
        tensor<fp16, [1, 3, 4]> a = scaled_dot_product_attention(query = q, key = q, value = q)[name = tensor<string, []>("a")];
    } -> (a);
}
"""  # noqa: E501
    err = parse_error(text, MILTypeError)
    assert (err.line, err.col) == (5, 37)
    assert "ios18" in err.message


# ---- robustness -----------------------------------------------------------------------------

EDITS = [
    "",
    "(",
    ")",
    "[",
    "]",
    ",",
    "=",
    ";",
    "{",
    "}",
    "<",
    ">",
    '"',
    "-",
    "1",
    "-1",
    "x",
    "true",
    "inf",
    "0x1p-3",
    "1e400",
    "99999999999999999999",
    "tensor<fp16, []>",
    "BLOBFILE(",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs("ios18", max_ops=4), st.data())
def test_mutated_text_fails_cleanly(built: BuiltProgram, data: st.DataObject) -> None:
    """Any edit of valid text either parses or raises MILError with an in-range position."""
    text = print_program(built.program)
    start = data.draw(st.integers(0, len(text)), label="start")
    stop = data.draw(st.integers(start, min(len(text), start + 12)), label="stop")
    mutated = text[:start] + data.draw(st.sampled_from(EDITS), label="insert") + text[stop:]
    try:
        parse_program(mutated)
    except MILError as err:
        lines = mutated.split("\n")
        assert err.line is not None and 1 <= err.line <= len(lines)
        assert err.col is not None and 1 <= err.col <= len(lines[err.line - 1]) + 1
