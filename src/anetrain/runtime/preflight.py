"""The one preflight both backends run before compiling: a program against the registry.

:func:`preflight` applies every entry of :mod:`anetrain.hardware.constraints` that binds the
chip (on its macOS version) and returns one :class:`Finding` per violation, errors and
warnings alike, each naming the rule, the statement and the evidence, like a linter.
:func:`enforce` is what ``Backend.compile`` calls: errors raise :class:`UnsupportedOpError`,
warnings go to the ``anetrain.preflight`` logger (silent unless the application configures
logging; ``anetrain mil check --chip`` prints them all). Each ``check`` named in the registry is
implemented here exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from anetrain.hardware.chips import ChipProfile
from anetrain.hardware.constraints import Constraint, constraints_for
from anetrain.mil.dialect import opset_at_least
from anetrain.mil.ir import Function, Operation, Program, Var
from anetrain.mil.ops import get_spec
from anetrain.runtime.errors import UnsupportedOpError

log = logging.getLogger("anetrain.preflight")
log.addHandler(logging.NullHandler())  # silent unless the application configures logging
_logged: set[tuple[str, str]] = set()

Hit = tuple[str, "Operation | None"]  # (what is wrong, the statement, if any)
Check = Callable[[Program, ChipProfile, Constraint], Iterator[Hit]]


@dataclass(frozen=True)
class Finding:
    """One violation of one registry rule."""

    constraint: Constraint
    message: str
    line: int | None = None

    @property
    def severity(self) -> str:
        return self.constraint.severity

    def format(self, where: str = "") -> str:
        """``FILE:LINE: error[rule-id]: message; fix (source)``."""
        loc = ":".join(str(p) for p in (where, self.line) if p not in ("", None))
        c = self.constraint
        head = f"{loc}: " if loc else ""
        return f"{head}{c.severity}[{c.id}]: {self.message}; {c.fix} ({c.source})"


def _where(op: Operation) -> str:
    line = f" at line {op.line}" if op.line else ""
    return f"op '{op.op_type}' (statement '{op.name}'{line})"


def _surfaces(fn: Function) -> Iterator[tuple[str, Var]]:
    yield from (("input", v) for v in fn.inputs)
    yield from (("output", v) for v in fn.outputs)


def _convs(fn: Function) -> Iterator[tuple[Operation, int, int]]:
    """Every conv with its (input, output) channel counts."""
    for op in fn.operations:
        if op.op_type == "conv":
            x = op.inputs["x"]
            assert not isinstance(x, tuple)
            yield op, x.type.shape[1], op.outputs[0].type.shape[1]


def _program_version(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    if p.version not in chip.program_versions:
        accepted = ", ".join(f"program({v})" for v in chip.program_versions)
        yield f"program({p.version}) is not accepted by {chip.label}, which takes {accepted}", None


def _opset(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    for fn in p.functions.values():
        if fn.opset not in chip.opsets:
            yield (
                f"function '{fn.name}<{fn.opset}>': opset {fn.opset} is not supported by "
                f"{chip.label} (supported: {', '.join(chip.opsets)})",
                None,
            )


def _single_function(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    if len(p.functions) != 1:
        yield f"the program defines {len(p.functions)} functions; kernels have exactly one", None


def _ops_in(p: Program, ops: frozenset[str] | set[str], chip: ChipProfile) -> Iterator[Hit]:
    for op in p.main.operations:
        if op.op_type in ops:
            yield f"{_where(op)} is not supported on {chip.label}", op


def _unsupported_ops(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    yield from _ops_in(p, chip.unsupported_ops, chip)


def _ops_present(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    for op in p.main.operations:
        if op.op_type in set(c.params["ops"]):
            yield f"{_where(op)} may not compile on {chip.label}", op


def _io_dtype(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    for kind, v in _surfaces(p.main):
        if str(v.type.dtype) not in chip.io_dtypes:
            yield (
                f"{kind} '{v.name}' is {v.type}; {chip.label} surfaces take "
                f"{'/'.join(chip.io_dtypes)} tensors",
                None,
            )


def _io_layout(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    for kind, v in _surfaces(p.main):
        if v.type.rank != chip.io_rank or v.type.shape[0] != 1:
            yield (
                f"{kind} '{v.name}' is {v.type}; surfaces hold rank-{chip.io_rank} [1, C, H, W] "
                "tensors",
                None,
            )


def _max_dim(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    for kind, v in _surfaces(p.main):
        if any(d > chip.max_dim for d in v.type.shape):
            yield f"{kind} '{v.name}' is {v.type}: dimension above {chip.max_dim}", None
    for op in p.main.operations:
        for out in op.outputs:
            if any(d > chip.max_dim for d in out.shape):
                yield (
                    f"{_where(op)}: output shape {list(out.shape)} has a dimension above "
                    f"{chip.max_dim} on {chip.label}",
                    op,
                )


def _conv_input_channels(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    limit = chip.conv_max_input_channels
    for op, c_in, _ in _convs(p.main):
        if c_in > limit:
            yield f"{_where(op)}: {c_in} input channels exceed {limit} on {chip.label}", op


def _conv_output_channels(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    limit = int(c.params["max"])
    for op, _, c_out in _convs(p.main):
        if c_out > limit:
            yield f"{_where(op)}: {c_out} output channels (above {limit})", op


def _conv_channels_allowed(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    allowed = set(c.params["allowed"])
    for op, c_in, c_out in _convs(p.main):
        if c_in not in allowed or c_out not in allowed:
            yield f"{_where(op)}: {c_in}->{c_out} channels on {chip.label}", op


def _weight_bytes(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    total = sum(
        lit.type.nbytes
        for op in p.main.operations
        if op.op_type == "const" or op.op_type.startswith("constexpr_")
        for key, lit in op.attributes.items()
        if key != "name" and not lit.type.is_scalar
    )
    if total > chip.max_weight_bytes:
        yield (
            f"the program's constants take {total} bytes, above the {chip.max_weight_bytes}-byte "
            f"ceiling of {chip.label}",
            None,
        )


def _blob_per_file(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    seen: dict[str, str] = {}
    for op in p.main.operations:
        for lit in op.attributes.values():
            ref = lit.blob
            if ref is None:
                continue
            if ref.path in seen:
                yield (
                    f"const '{op.name}' shares weight file {ref.path!r} with "
                    f"'{seen[ref.path]}' on {chip.label}",
                    op,
                )
            elif ref.offset != 64:
                yield f"const '{op.name}' reads {ref.path!r} at offset {ref.offset}, not 64", op
            seen.setdefault(ref.path, op.name)


def _single_input(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    n = len(p.main.inputs)
    if n > 1 and not chip.multi_input_allowed:
        yield f"the program has {n} inputs", None


def _input_order(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    names = [v.name for v in p.main.inputs]
    if names != sorted(names):
        yield f"inputs {names} are not in alphabetical order", None


def _min_spatial(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    floor = int(c.params["min"])
    for kind, v in _surfaces(p.main):
        if v.type.rank >= 1 and v.type.shape[-1] < floor:
            yield f"{kind} '{v.name}' is {v.type}: spatial size {v.type.shape[-1]} < {floor}", None


def _min_surface_bytes(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    for kind, v in _surfaces(p.main):
        if v.type.nbytes < chip.min_surface_bytes:
            yield (
                f"{kind} '{v.name}' is {v.type}: {v.type.nbytes} bytes, below the "
                f"{chip.min_surface_bytes}-byte surface floor of {chip.label}",
                None,
            )


def _sdpa_mask(p: Program, chip: ChipProfile, c: Constraint) -> Iterator[Hit]:
    if not chip.sdpa_ignores_mask:
        return
    for op in p.main.operations:
        if op.op_type == "scaled_dot_product_attention" and op.arg("attn_mask") is not None:
            yield f"{_where(op)} passes attn_mask, which {chip.label} ignores", op


CHECKS: dict[str, Check] = {
    "program_version": _program_version,
    "opset": _opset,
    "single_function": _single_function,
    "unsupported_ops": _unsupported_ops,
    "ops_present": _ops_present,
    "io_dtype": _io_dtype,
    "io_layout": _io_layout,
    "max_dim": _max_dim,
    "conv_input_channels": _conv_input_channels,
    "conv_output_channels": _conv_output_channels,
    "conv_channels_allowed": _conv_channels_allowed,
    "weight_bytes": _weight_bytes,
    "blob_per_file": _blob_per_file,
    "single_input": _single_input,
    "input_order": _input_order,
    "min_spatial": _min_spatial,
    "min_surface_bytes": _min_surface_bytes,
    "sdpa_mask": _sdpa_mask,
}

# checks that need a well-formed single-function program to make sense
_NEEDS_ONE_FUNCTION = set(CHECKS) - {"program_version", "opset", "single_function"}


def preflight(program: Program, chip: ChipProfile) -> list[Finding]:
    """Every violation of every registry rule binding ``chip``: errors first, then warnings,
    each group in registry order."""
    found: list[Finding] = []
    one_function = len(program.functions) == 1
    for c in constraints_for(chip):
        if c.check not in CHECKS:
            raise UnsupportedOpError(f"constraints.json entry {c.id!r}: unknown check {c.check!r}")
        if c.check in _NEEDS_ONE_FUNCTION and not one_function:
            continue
        for message, op in CHECKS[c.check](program, chip, c):
            found.append(Finding(c, message, op.line if op is not None else None))
    return sorted(found, key=lambda f: f.severity != "error")


def enforce(program: Program, chip: ChipProfile, name: str = "") -> list[Finding]:
    """Raise :class:`UnsupportedOpError` listing every error; log and return the warnings."""
    findings = preflight(program, chip)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        more = (
            f" (and {len(errors) - 1} more: "
            + "; ".join(f"[{f.constraint.id}] {f.message}" for f in errors[1:])
            + ")"
            if len(errors) > 1
            else ""
        )
        first = errors[0]
        raise UnsupportedOpError(
            f"{first.message}; {first.constraint.fix} [{first.constraint.id}]{more}"
        )
    for f in findings:
        key = (f.constraint.id, f.message)
        if key not in _logged:  # once per process: a sweep compiles the same shapes many times
            _logged.add(key)
            log.warning("%s%s", f"{name}: " if name else "", f.format())
    return findings


def check_supported(program: Program, supported: set[str] | None) -> None:
    """What a backend adds to the registry: every op is in its own op set (``supported``;
    None: no limit, e.g. the ANE) and legal in the function's opset."""
    fn = program.main
    for op in fn.operations:
        if supported is not None and op.op_type not in supported:
            raise UnsupportedOpError(f"{_where(op)} has no implementation on this backend")
        spec = get_spec(op.op_type)
        if not opset_at_least(fn.opset, spec.min_opset):
            raise UnsupportedOpError(
                f"{_where(op)} needs opset {spec.min_opset}, but the function is {fn.opset}"
            )
