"""Check a program against a chip profile before planning: dialect, ops, dtypes and shapes.

Every rejection is an :class:`UnsupportedOpError` naming the op (type, statement name, line) or
the offending program part, so a generator bug points at the statement that caused it.
"""

from __future__ import annotations

from anetrain.mil.dialect import opset_at_least
from anetrain.mil.ir import Operation, Program, Var
from anetrain.mil.ops import get_spec
from anetrain.runtime.chips import ChipProfile
from anetrain.runtime.errors import UnsupportedOpError


def _where(op: Operation) -> str:
    line = f" at line {op.line}" if op.line else ""
    return f"op '{op.op_type}' (statement '{op.name}'{line})"


def validate_program(program: Program, chip: ChipProfile, supported: set[str] | None) -> None:
    """Raise :class:`UnsupportedOpError` if ``chip`` cannot run ``program`` (or if an op is
    outside ``supported``, the backend's own op set; None: no such limit)."""
    chip_label = f"{chip.display} ({chip.name})"
    if program.version not in chip.program_versions:
        accepted = ", ".join(f"program({v})" for v in chip.program_versions)
        raise UnsupportedOpError(
            f"program({program.version}) is not accepted by {chip_label}, which takes {accepted}; "
            "build with the matching target (Builder('ios16') for M1/M2)"
        )
    if len(program.functions) != 1:
        raise UnsupportedOpError(
            f"the program defines {len(program.functions)} functions; kernels have exactly one"
        )
    fn = program.main
    if fn.opset not in chip.opsets:
        raise UnsupportedOpError(
            f"function '{fn.name}<{fn.opset}>': opset {fn.opset} is not supported by "
            f"{chip_label} (supported: {', '.join(chip.opsets)})"
        )
    for kind, tensors in (("input", fn.inputs), ("output", fn.outputs)):
        for var in tensors:
            _check_io(kind, var, chip, chip_label)
    for op in fn.operations:
        if supported is not None and op.op_type not in supported:
            raise UnsupportedOpError(f"{_where(op)} has no simulator implementation")
        if not chip.supports_op(op.op_type):
            raise UnsupportedOpError(f"{_where(op)} is not supported on {chip_label}")
        spec = get_spec(op.op_type)
        if not opset_at_least(fn.opset, spec.min_opset):
            raise UnsupportedOpError(
                f"{_where(op)} needs opset {spec.min_opset}, but the function is {fn.opset}"
            )
        for out in op.outputs:
            big = [d for d in out.shape if d > chip.max_dim]
            if big:
                raise UnsupportedOpError(
                    f"{_where(op)}: output shape {list(out.shape)} has a dimension above "
                    f"{chip.max_dim}, the limit assumed for {chip_label}; tile it"
                )
        if op.op_type == "conv":
            x = op.inputs["x"]
            assert not isinstance(x, tuple)
            c_in = x.type.shape[1]
            if c_in > chip.conv_max_input_channels:
                raise UnsupportedOpError(
                    f"{_where(op)}: {c_in} input channels exceed the conv limit of "
                    f"{chip.conv_max_input_channels} on {chip_label}; use matmul (as the "
                    "original's classifier backward does) or split the input channels"
                )


def _check_io(kind: str, var: Var, chip: ChipProfile, chip_label: str) -> None:
    t = var.type
    if str(t.dtype) not in chip.io_dtypes:
        raise UnsupportedOpError(
            f"{kind} '{var.name}' is {t}; {chip_label} surfaces take "
            f"{'/'.join(chip.io_dtypes)} tensors"
        )
    if t.rank != chip.io_rank or t.shape[0] != 1:
        raise UnsupportedOpError(
            f"{kind} '{var.name}' is {t}; surfaces hold rank-{chip.io_rank} [1, C, H, W] "
            "tensors (usually [1, C, 1, S])"
        )
    big = [d for d in t.shape if d > chip.max_dim]
    if big:
        raise UnsupportedOpError(
            f"{kind} '{var.name}' is {t}: dimension above {chip.max_dim} on {chip_label}"
        )
