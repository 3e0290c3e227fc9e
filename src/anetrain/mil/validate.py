"""Whole-program checks the parser cannot make statement by statement.

The parser already guarantees well-typed statements; here we check the program as the ANE
compiler sees it: header and opset agree, op names are unique, every op exists in the
function's opset, and every BLOBFILE reference resolves to a blob of the declared type and size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from anetrain.errors import MILTypeError, WeightFileError
from anetrain.mil.blob import BlobFile, read_blob_file
from anetrain.mil.dialect import OPSET_ORDER, dialect_for_version, get_dialect, opset_at_least
from anetrain.mil.ir import BlobRef, Function, Operation, Program
from anetrain.mil.ops import get_spec
from anetrain.mil.types import TensorType

WEIGHTS_PREFIX = "@model_path/"


@dataclass(frozen=True)
class Issue:
    severity: str  # "error" or "warning"
    message: str
    line: int | None = None
    col: int | None = None


def _at(op: Operation) -> dict[str, int | None]:
    return {"line": op.line, "col": op.col}


def validate_program(
    program: Program,
    open_blob: Callable[[str], BlobFile] | None = None,
    target: str | None = None,
) -> list[Issue]:
    """Problems in ``program``; ``open_blob(file_name)`` resolves weight files when given,
    ``target`` (ios18/ios16) additionally requires that dialect."""
    issues: list[Issue] = []
    if target is not None:
        wanted = get_dialect(target).program_version
        if program.version != wanted:
            issues.append(
                Issue(
                    "error",
                    f"program({program.version}) is not the {target} dialect (program({wanted})); "
                    f"convert it with: anetrain mil print FILE --target {target}",
                    line=1,
                    col=1,
                )
            )
    if "main" not in program.functions:
        issues.append(Issue("error", "the ANE runs a function named 'main'; none is defined"))
    expected = dialect_for_version(program.version)
    for fn in program.functions.values():
        if fn.opset not in OPSET_ORDER:
            issues.append(Issue("error", f"unknown opset '{fn.opset}' in func {fn.name}"))
        elif (program.version == "1.0") != (fn.opset != "ios18"):
            issues.append(
                Issue(
                    "error",
                    f"program({program.version}) does not match func {fn.name}<{fn.opset}>; "
                    f"use program({expected.program_version}) with <{expected.opset}> "
                    "or re-print with --target",
                )
            )
        issues += _shape_and_attribute_issues(fn)
        seen: dict[str, Operation] = {}
        for op in fn.operations:
            spec = get_spec(op.op_type)
            if fn.opset in OPSET_ORDER and not opset_at_least(fn.opset, spec.min_opset):
                issues.append(
                    Issue(
                        "error",
                        f"op '{op.name}' ({op.op_type}) needs opset {spec.min_opset}, "
                        f"func {fn.name} declares {fn.opset}",
                        **_at(op),
                    )
                )
            if op.name in seen:
                issues.append(Issue("error", f"op name '{op.name}' is used twice", **_at(op)))
            seen[op.name] = op
            for lit in op.attributes.values():
                if lit.blob is not None:
                    issues += _check_blob(op, lit.blob, lit.type, open_blob)
        used = {v.name for op in fn.operations for v in op.input_vars()}
        used |= {v.name for v in fn.outputs}
        for var in fn.inputs:
            if var.name not in used:
                issues.append(Issue("warning", f"input '{var.name}' is never used"))
    return issues


def _shape_and_attribute_issues(fn: Function) -> list[Issue]:
    """Zero-size dimensions (no op computes on an empty tensor; the simulator and the ANE
    compiler fail on them far from the cause) and attribute keys the op does not take (only
    ``name`` outside the constexpr ops, whose parameters live in the attribute block)."""
    issues = []
    for var in fn.inputs:
        if 0 in var.type.shape:
            issues.append(
                Issue("error", f"input '{var.name}' is {var.type}: a zero-size dimension")
            )
    for op in fn.operations:
        spec = get_spec(op.op_type)
        allowed = {"name"} | ({p.name for p in spec.params} if spec.attributes_only else set())
        for key in op.attributes:
            if key not in allowed:
                issues.append(
                    Issue(
                        "error",
                        f"op '{op.name}' ({op.op_type}) has an unknown attribute '{key}' "
                        f"(allowed: {', '.join(sorted(allowed))})",
                        **_at(op),
                    )
                )
        typed = [(f"output '{v.name}'", v.type) for v in op.outputs]
        typed += [(f"attribute '{k}'", lit.type) for k, lit in op.attributes.items()]
        for what, t in typed:
            if 0 in t.shape:
                issues.append(
                    Issue(
                        "error",
                        f"op '{op.name}' ({op.op_type}): {what} is {t}, a zero-size dimension",
                        **_at(op),
                    )
                )
    return issues


def check_structure(program: Program) -> None:
    """Raise :class:`MILTypeError` for the first zero-size dimension or unknown attribute
    (the compile path calls this: such programs are refused before any backend sees them)."""
    for fn in program.functions.values():
        for issue in _shape_and_attribute_issues(fn):
            raise MILTypeError(issue.message, line=issue.line, col=issue.col)


def _check_blob(
    op: Operation, ref: BlobRef, t: TensorType, open_blob: Callable[[str], BlobFile] | None
) -> list[Issue]:
    if not ref.path.startswith(WEIGHTS_PREFIX):
        return [
            Issue(
                "error", f"BLOBFILE path {ref.path!r} must start with '{WEIGHTS_PREFIX}'", **_at(op)
            )
        ]
    if open_blob is None:
        return []
    try:
        blob = open_blob(ref.file_name)
        blob.read(ref.offset, dtype=t.dtype.numpy, shape=t.shape)
    except WeightFileError as err:
        return [Issue("error", f"'{op.name}': {err}", **_at(op))]
    except FileNotFoundError:
        return [Issue("error", f"'{op.name}': weight file {ref.file_name!r} not found", **_at(op))]
    except OSError as err:  # a folder where the file should be, no permission, ...
        reason = err.strerror or err
        return [Issue("error", f"'{op.name}': cannot read {ref.file_name!r} ({reason})", **_at(op))]
    return []


def directory_blob_opener(root: Path) -> Callable[[str], BlobFile]:
    """Opens ``root/<file>`` for references ``@model_path/<file>``, caching each file once.

    ``root`` may be the model directory (holding ``weights/``) or the ``weights`` directory.
    """
    cache: dict[str, BlobFile] = {}

    def open_blob(file_name: str) -> BlobFile:
        if file_name not in cache:
            path = root / file_name
            if not path.exists() and file_name.startswith("weights/"):
                path = root / file_name[len("weights/") :]
            if not path.exists():
                raise FileNotFoundError(path)
            cache[file_name] = read_blob_file(path)
        return cache[file_name]

    return open_blob
