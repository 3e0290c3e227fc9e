"""Print a :class:`Program` as the MIL text the ANE compiler accepts.

Floats are printed in the shortest form that reads back to the same value in their dtype, so
``print(parse(text)) == text`` holds for every program this printer produced.
"""

from __future__ import annotations

import numpy as np

from anetrain.errors import MILTypeError
from anetrain.mil.dialect import Dialect, dialect_for_version, get_dialect, opset_at_least
from anetrain.mil.ir import Arg, Function, Literal, Operation, Program, Var
from anetrain.mil.ops import get_spec, infer_type
from anetrain.mil.types import BOOL, STRING, DType, TensorType

INDENT = "    "


def format_type(t: TensorType, dialect: Dialect) -> str:
    if t.is_scalar and not dialect.verbose_scalars:
        return str(t.dtype)
    return str(t)


def format_float(value: float | np.floating, dtype: DType) -> str:
    v = dtype.numpy.type(value)
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    mag = abs(float(v))
    if mag == 0 or 1e-4 <= mag < 1e7:
        return np.format_float_positional(v, unique=True, trim="0")
    return np.format_float_scientific(v, unique=True, trim="0")


def format_element(value: object, dtype: DType) -> str:
    if dtype is BOOL:
        return "true" if bool(value) else "false"
    if dtype.is_float:
        return format_float(value, dtype)  # type: ignore[arg-type]
    return str(int(value))  # type: ignore[call-overload]


def quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def format_literal(lit: Literal, dialect: Dialect) -> str:
    prefix = format_type(lit.type, dialect)
    blob = lit.blob
    if blob is not None:
        path = format_literal(Literal(TensorType(STRING), blob.path), dialect)
        offset = format_literal(Literal(TensorType(DType.UINT64), np.uint64(blob.offset)), dialect)
        return f"{prefix}(BLOBFILE(path = {path}, offset = {offset}))"
    if lit.type.dtype is STRING:
        assert isinstance(lit.data, str)
        return f"{prefix}({quote(lit.data)})"
    data = np.asarray(lit.data)
    if lit.type.is_scalar:
        return f"{prefix}({format_element(data.reshape(()).item(), lit.type.dtype)})"
    items = ", ".join(format_element(v, lit.type.dtype) for v in data.ravel().tolist())
    return f"{prefix}([{items}])"


def format_arg(arg: Arg, dialect: Dialect) -> str:
    if isinstance(arg, tuple):
        return "(" + ", ".join(format_arg(a, dialect) for a in arg) + ")"
    if isinstance(arg, Var):
        return arg.name
    return format_literal(arg, dialect)


def format_operation(op: Operation, dialect: Dialect) -> str:
    outs = ", ".join(f"{format_type(v.type, dialect)} {v.name}" for v in op.outputs)
    inputs = ", ".join(f"{k} = {format_arg(v, dialect)}" for k, v in op.inputs.items())
    attrs = ", ".join(f"{k} = {format_literal(v, dialect)}" for k, v in op.attributes.items())
    block = f"[{attrs}]" if attrs else ""
    return f"{outs} = {op.op_type}({inputs}){block};"


def format_function(fn: Function, dialect: Dialect) -> list[str]:
    params = ", ".join(f"{format_type(v.type, dialect)} {v.name}" for v in fn.inputs)
    lines = [f"{INDENT}func {fn.name}<{dialect.opset}>({params}) {{"]
    lines += [INDENT * 2 + format_operation(op, dialect) for op in fn.operations]
    outs = ", ".join(v.name for v in fn.outputs)
    lines.append(f"{INDENT}}} -> ({outs});")
    return lines


def format_build_info(info: dict[str, str], dialect: Dialect) -> str:
    key = format_type(TensorType(STRING), dialect)
    pairs = ", ".join(f"{{{quote(k)}, {quote(v)}}}" for k, v in info.items())
    return f"[buildInfo = dict<{key}, {key}>({{{pairs}}})]"


def _check_for_target(op: Operation, dialect: Dialect) -> None:
    """Re-check ``op`` under the target's opset rules (op availability and dtypes)."""
    spec = get_spec(op.op_type)
    if not opset_at_least(dialect.opset, spec.min_opset):
        raise MILTypeError(
            f"op '{op.name}' ({op.op_type}) needs {spec.min_opset}; "
            f"target {dialect.target} only has {dialect.opset}"
        )
    args: dict[str, Arg] = dict(op.inputs)
    if spec.attributes_only:
        args.update({k: v for k, v in op.attributes.items() if k != "name"})
    try:
        infer_type(op.op_type, args, dialect.opset)
    except MILTypeError as err:
        raise MILTypeError(
            f"op '{op.name}' cannot be written for {dialect.target}: {err.message}"
        ) from None


def print_program(program: Program, target: str | Dialect | None = None) -> str:
    """MIL text for ``program``; ``target`` re-spells it for another dialect."""
    if target is None:
        dialect = dialect_for_version(program.version)
        version = program.version
    else:
        dialect = get_dialect(target)
        version = dialect.program_version
        for fn in program.functions.values():
            for op in fn.operations:
                _check_for_target(op, dialect)
    lines = [f"program({version})", format_build_info(program.build_info, dialect), "{"]
    for fn in program.functions.values():
        fn_dialect = (
            dialect
            if target is not None
            else Dialect(dialect.target, version, fn.opset, dialect.verbose_scalars)
        )
        lines += format_function(fn, fn_dialect)
    lines.append("}")
    return "\n".join(lines) + "\n"
