"""The MIL parser, validator and simulator raise only the project's typed errors, for any text.

Hand-written cases for each class of hostile input found so far, then mutation fuzzing of
the shipped programs and of hypothesis-drawn ones, and of MILBlob and checkpoint bytes (the
fast variants; ``scripts/fuzz.py`` runs the long ones, figures in docs/robustness.md).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anetrain.cli import main
from anetrain.errors import AnetrainError, MILError, MILSyntaxError, MILTypeError
from anetrain.mil import parse_program, print_program
from anetrain.mil.validate import validate_program
from anetrain.runtime import compile as compile_kernel
from fuzzing import (
    check_mil_text,
    fuzz_blob,
    fuzz_checkpoint,
    fuzz_mil,
    mutate_text,
)
from mil_strategies import programs

PROGRAM = """program(1.3)
{{
    func main<ios18>(tensor<fp16, [1, {C}, 1, 4]> x) {{
{BODY}
    }} -> (y);
}}
"""
ADD = '        tensor<fp16, [1, {C}, 1, 4]> y = add(x = x, y = {Y})[name = string("y"){ATTR}];'


def program(c: str = "2", y: str = "x", attr: str = "", body: str | None = None) -> str:
    line = body if body is not None else ADD.format(C=c, Y=y, ATTR=attr)
    return PROGRAM.format(C=c, BODY=line)


CONST = '        {T} k = const()[name = string("k"), val = {V}];\n'
HOSTILE = {
    "dimension past the int digit limit": program(c="9" * 5000),
    "integer past the int digit limit": program(
        body=CONST.format(T="int32", V="int32(" + "7" * 5000 + ")")
        + ADD.format(C=2, Y="x", ATTR="")
    ),
    "hex float without digits": program(y="fp16(0x.p1)"),
    "hex float without mantissa": program(y="fp16(0xp3)"),
    "hex float out of range": program(y="fp32(0x1p99999)"),
    "decimal float out of range": program(y="fp32(1e99999)"),
    "deep list nesting": program(y="tensor<fp16, [1]>(" + "[" * 5000 + "1" + "]" * 5000 + ")"),
    "deep tuple nesting": program(y="(" * 5000 + "x" + ")" * 5000),
    "tensor where a scalar belongs (BLOBFILE offset)": program(
        y='tensor<fp16, [1, 2, 1, 4]>(BLOBFILE(path = string("@model_path/weights/w.bin"), '
        "offset = tensor<uint64, [2]>([64, 128])))"
    ),
    "string where numbers belong": program(
        body='        string p = const()[name = string("p"), val = string("valid")];\n'
        "        tensor<fp16, [1, 2, 1, 4]> y = softmax(axis = p, x = x)"
        '[name = string("y")];'
    ),
    "tensor absurdly large": program(c="4000000000000"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_text_is_a_typed_error(case: str) -> None:
    with pytest.raises(MILError) as info:
        parse_program(HOSTILE[case])
    assert info.value.line is not None  # it points at the place


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (program(c="0"), "zero-size dimension"),
        (program(attr=", bogus = int32(1)"), "unknown attribute 'bogus'"),
        (program(attr=", val = fp16(1)"), "unknown attribute 'val'"),
    ],
)
def test_zero_sizes_and_unknown_attributes_are_refused_at_validation(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    program_ = parse_program(text)
    assert any(message in i.message and i.severity == "error" for i in validate_program(program_))
    path = tmp_path / "p.mil"
    path.write_text(text)
    assert main(["mil", "check", str(path)]) == 1
    assert message in capsys.readouterr().err
    with pytest.raises(MILTypeError, match=message):
        compile_kernel(program_, backend="sim")


def test_constexpr_attributes_stay_allowed() -> None:
    text = (Path(__file__).parents[1] / "examples/mil/int8_w8a8/int8_w8a8.mil").read_text()
    assert not [i for i in validate_program(parse_program(text)) if i.severity == "error"]


def test_number_length_limit_names_the_limit() -> None:
    with pytest.raises(MILSyntaxError, match="number of 5000 characters"):
        parse_program(program(c="9" * 5000))


def test_mutated_shipped_programs_raise_only_typed_errors() -> None:
    tally = fuzz_mil(800, seed=11)
    assert not tally.escapes, tally.escapes[0][1]
    assert tally.accepted > 0 and tally.refused > 600, tally.summary()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(built=programs(max_ops=5), seed=st.integers(0, 2**32 - 1))
def test_mutated_random_programs_raise_only_typed_errors(built: object, seed: int) -> None:
    text = print_program(built.program)  # type: ignore[attr-defined]
    rng = random.Random(seed)
    for _ in range(5):
        mutated = mutate_text(text, rng)
        try:
            check_mil_text(mutated, Path("."), simulate=True)
        except AnetrainError:
            pass
        except Exception as err:
            raise AssertionError(f"{type(err).__name__}: {err}\n{mutated}") from err


def test_mutated_milblob_files_raise_only_typed_errors() -> None:
    tally = fuzz_blob(3000, seed=3)
    assert not tally.escapes, tally.escapes[0][1]
    assert tally.refused > 1000, tally.summary()


def test_mutated_checkpoints_raise_only_typed_errors(tmp_path: Path) -> None:
    tally = fuzz_checkpoint(400, tmp_path, seed=5)
    assert not tally.escapes, tally.escapes[0][1]
    assert tally.refused > 350, tally.summary()
