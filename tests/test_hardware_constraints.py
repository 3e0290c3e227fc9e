"""The constraints registry: every entry rejects (or warns on) a program that violates it and
accepts the fixed form; both backends' shared compile path and 'mil check' apply it."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable

import numpy as np
import pytest

from anetrain import hardware, runtime
from anetrain.hardware import ChipProfile, get_chip
from anetrain.mil import FP16, FP32, Builder
from anetrain.mil.ir import Program
from anetrain.mil.types import INT32
from anetrain.runtime import preflight as preflight_module
from anetrain.runtime.preflight import CHECKS, enforce, preflight

Make = Callable[[bool], Program]  # make(violating) -> program


def _softmax(target: str = "ios18", dtype=FP16, shape=(1, 8, 1, 32)) -> Program:
    b = Builder(target)
    b.returns(b.softmax(b.input("x", dtype, list(shape)), axis=1, name="y"))
    return b.program()


def _conv(c_in: int, c_out: int, target: str = "ios18", seq: int = 32) -> Program:
    b = Builder(target)
    x = b.input("x", FP16, [1, c_in, 1, seq])
    b.returns(b.conv(x, b.weight("W", FP16, [c_out, c_in, 1, 1], "w.bin", 64), name="y"))
    return b.program()


def _cast(target: str) -> Program:
    b = Builder(target)
    h = b.cast(b.input("x", FP16, [1, 8, 1, 32]), "fp32", name="up")
    b.returns(b.cast(b.mul(h, h, name="sq"), "fp16", name="down"))
    return b.program()


def _no_cast(target: str) -> Program:
    b = Builder(target)
    x = b.input("x", FP16, [1, 8, 1, 32])
    b.returns(b.mul(x, x, name="sq"))
    return b.program()


def _opset(bad: bool) -> Program:
    prog = _softmax("ios16")
    if bad:
        prog.main.opset = "ios18"
    return prog


def _two_functions(bad: bool) -> Program:
    prog = _softmax()
    if bad:
        prog.functions["second"] = copy.deepcopy(prog.main)
    return prog


def _reshape(bad: bool) -> Program:
    b = Builder("ios18")
    x = b.input("x", FP16, [1, 64, 1, 2048])
    n = 131072 if bad else 32768
    flat = b.reshape(x, b.const([1, n, 1, 131072 // n], dtype=INT32), name="flat")
    b.returns(b.reshape(flat, b.const([1, 64, 1, 2048], dtype=INT32), name="back"))
    return b.program()


def _shared_file(bad: bool) -> Program:
    b = Builder("ios16")
    x = b.input("x", FP16, [1, 8, 1, 32])
    y = b.conv(x, b.weight("W0", FP16, [8, 8, 1, 1], "all.bin" if bad else "w0.bin", 64))
    second = ("all.bin", 64 + 64 + 128) if bad else ("w1.bin", 64)
    b.returns(b.conv(y, b.weight("W1", FP16, [8, 8, 1, 1], *second)))
    return b.program()


def _inputs(names: tuple[str, ...]) -> Program:
    b = Builder("ios18")
    xs = [b.input(n, FP16, [1, 8, 1, 32]) for n in names]
    out = xs[0]
    for x in xs[1:]:
        out = b.add(out, x)
    b.returns(out)
    return b.program()


def _sdpa(bad: bool) -> Program:
    b = Builder("ios18")
    q = b.input("q", FP16, [1, 2, 32, 16])
    mask = b.const(np.zeros((1, 1, 32, 32), np.float16), name="mask") if bad else None
    b.returns(b.scaled_dot_product_attention(q, q, q, mask, name="att"))
    return b.program()


M1_26 = get_chip("m1", "26")
M1_15 = get_chip("m1", "15")
M4 = get_chip("m4")
TINY_CEILING = dataclasses.replace(M4, max_weight_bytes=1000)

# registry id -> (chip, make(violating)); a new entry without a case here fails the test below
CASES: dict[str, tuple[ChipProfile, Make]] = {
    "dialect-program-version": (M1_26, lambda bad: _softmax("ios18" if bad else "ios16")),
    "dialect-opset": (M1_26, _opset),
    "single-function": (M4, _two_functions),
    "unsupported-op": (M1_26, lambda bad: _cast("ios16") if bad else _no_cast("ios16")),
    "cast-m1-macos15-unclear": (M1_15, lambda bad: _cast("ios18") if bad else _no_cast("ios18")),
    "io-dtype": (M1_26, lambda bad: _softmax("ios16", FP32 if bad else FP16)),
    "io-layout": (M4, lambda bad: _softmax(shape=(1, 8, 32) if bad else (1, 8, 1, 32))),
    "max-dim": (M4, _reshape),
    "conv-input-channels": (M4, lambda bad: _conv(32000 if bad else 16000, 8)),
    "conv-output-channels-risky": (M4, lambda bad: _conv(8, 32000 if bad else 16000)),
    "conv-512-channels-only": (
        get_chip("m3pro"),
        lambda bad: _conv(*(256, 256) if bad else (512, 512)),
    ),
    "weights-size": (TINY_CEILING, lambda bad: _conv(*(32, 32) if bad else (16, 16))),
    "weights-one-blob-per-file": (M1_26, _shared_file),
    "single-input-surface": (M4, lambda bad: _inputs(("a", "b") if bad else ("a",))),
    "input-order": (M4, lambda bad: _inputs(("b", "a") if bad else ("a", "b"))),
    "min-spatial": (M4, lambda bad: _softmax(shape=(1, 8, 1, 8 if bad else 32))),
    "surface-min-bytes": (
        M4,
        lambda bad: _softmax(shape=(1, 8, 1, 32) if bad else (1, 768, 1, 32)),
    ),
    "sdpa-mask-ignored": (M4, _sdpa),
}


def _ids(program: Program, chip: ChipProfile) -> dict[str, str]:
    return {f.constraint.id: f.severity for f in preflight(program, chip)}


def test_every_registry_entry_has_a_case_and_a_known_check() -> None:
    entries = hardware.constraints()
    assert {c.id for c in entries} == set(CASES)
    for c in entries:
        assert c.check in CHECKS and c.evidence and c.fix
        assert c.confidence in ("measured", "reported", "assumed")
        assert all(e.project and e.ref and e.observed for e in c.evidence)


@pytest.mark.parametrize("cid", sorted(CASES))
def test_entry_flags_the_violation_and_accepts_the_fix(cid: str) -> None:
    chip, make = CASES[cid]
    entry = next(c for c in hardware.constraints() if c.id == cid)
    assert entry.applies_to(chip)
    assert _ids(make(True), chip).get(cid) == entry.severity
    assert cid not in _ids(make(False), chip)


def test_conflicting_reports_are_warnings_that_say_so() -> None:
    for c in hardware.constraints():
        if len({e.project + e.ref for e in c.evidence}) > 1 and c.severity == "warning":
            assert any(w in c.rule for w in ("both", "conflict", "uncertain", "works on others"))
    conflicted = {"single-input-surface", "min-spatial", "conv-512-channels-only"}
    assert all(
        next(c for c in hardware.constraints() if c.id == i).severity == "warning"
        for i in conflicted
    )


def test_dialect_depends_on_chip_and_macos() -> None:
    assert get_chip("m1").macos == hardware.default_macos() == "26"
    assert get_chip("m1").dialect == "ios16" and get_chip("m2", "26.3").dialect == "ios16"
    assert get_chip("m1max", "15.6.1").dialect == "ios18"  # trained with program(1.3) there
    assert get_chip("m4", "26").dialect == "ios18"
    assert get_chip("m4", "14").dialect == "ios16"  # no ios18 opset before macOS 15
    big = (1, 768, 1, 32)  # above the surface floor: no warning either
    assert _ids(_softmax("ios18", shape=big), get_chip("m1", "15")) == {}
    assert "dialect-program-version" in _ids(_softmax("ios18", shape=big), get_chip("m1", "26"))
    with pytest.raises(runtime.UnknownChipError, match=r"macOS '13'.*known: 14, 15, 26"):
        get_chip("m4", "13")


def test_rules_outside_their_chips_or_os_do_not_bind() -> None:
    cast_15 = next(c for c in hardware.constraints() if c.id == "cast-m1-macos15-unclear")
    assert cast_15.applies_to(M1_15) and not cast_15.applies_to(M1_26)
    assert not cast_15.applies_to(get_chip("m4", "15"))
    assert "conv-512-channels-only" not in _ids(_conv(256, 256), M4)


def test_enforce_raises_every_error_and_logs_warnings(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(runtime.UnsupportedOpError) as info:
        enforce(_softmax("ios18", FP32), M1_26)
    msg = str(info.value)
    assert "[dialect-program-version]" in msg and "[io-dtype]" in msg and "3 more" in msg
    preflight_module._logged.clear()  # warnings are logged once per process
    with caplog.at_level(logging.WARNING, logger="anetrain.preflight"):
        found = enforce(_softmax(shape=(1, 8, 1, 8)), M4)
        again = enforce(_softmax(shape=(1, 8, 1, 8)), M4)
    assert [f.constraint.id for f in found].count("min-spatial") == 2  # input and output
    assert all(f.severity == "warning" for f in found)
    assert "warning[min-spatial]" in caplog.text and "AmiraniLabs/libane" in caplog.text
    assert len(again) == len(found) and caplog.text.count("warning[min-spatial]") == 2


def test_shared_compile_path_runs_the_preflight_on_sim() -> None:
    sim = runtime.get_backend("sim")
    with pytest.raises(runtime.UnsupportedOpError, match=r"\[conv-input-channels\]"):
        runtime.compile(_conv(32000, 8), backend=sim)
    assert sim.compile_count == 0


def test_docs_list_every_registry_entry_with_its_confidence() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[1] / "docs" / "runtime.md").read_text()
    for c in hardware.constraints():
        assert f"| `{c.id}` |" in docs and f"| {c.severity} | {c.confidence} |" in docs, c.id


def test_hardware_is_a_leaf_package() -> None:
    """Importing it loads no other anetrain module but the root error class and what the
    package root runs first (the stdlib-only BLAS kernel choice): no cycles."""
    import ast
    import subprocess
    import sys

    code = (
        "import sys, anetrain.hardware as h; h.constraints(); h.get_chip('m1');"
        "print(sorted(m for m in sys.modules if m.startswith('anetrain')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(ast.literal_eval(out.stdout))
    assert loaded - {"anetrain", "anetrain.blas", "anetrain.errors"} == {
        "anetrain.hardware", "anetrain.hardware.chips", "anetrain.hardware.constraints",
        "anetrain.hardware.errors",
    }  # fmt: skip
