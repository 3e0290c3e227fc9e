"""A builder that reads like the math: ``y = b.matmul(x, w)``.

Every op in the registry is a method (``b.conv``, ``b.softmax``, ...). Arguments may be
:class:`Var` s or plain Python/NumPy values; the latter become separate ``const`` statements
because the ANE compiler wants op arguments to be variables. Types are inferred and checked as
each op is added, so a mistake fails at the line that made it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from anetrain.errors import MILTypeError
from anetrain.mil.dialect import Dialect, get_dialect, opset_at_least
from anetrain.mil.ir import (
    DEFAULT_BUILD_INFO,
    Arg,
    BlobRef,
    Function,
    Literal,
    Operation,
    Program,
    Var,
)
from anetrain.mil.ops import OpSpec, get_spec, infer_type, literal, literal_from_python
from anetrain.mil.types import STRING, DType, TensorType

WEIGHT_PATH = "@model_path/weights/{}"
_NAME_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED = frozenset({"true", "false", "inf", "nan", "BLOBFILE"})  # literals to the parser


def _valid_name(name: str) -> bool:
    return bool(_NAME_OK.match(name)) and name not in RESERVED


class Builder:
    """Builds one ``main`` function for a target dialect ("ios18" or "ios16")."""

    def __init__(self, target: str | Dialect = "ios18", function: str = "main") -> None:
        self.dialect = get_dialect(target)
        self.function = Function(function, self.dialect.opset, inputs=[])
        self._names: set[str] = set()
        self._counters: dict[str, int] = {}

    # ---- names ----------------------------------------------------------------------------

    def unique(self, base: str) -> str:
        """``base`` if unused, else ``base_1``, ``base_2``, ..."""
        if not _valid_name(base):
            raise ValueError(f"invalid MIL identifier {base!r}")
        if base not in self._names:
            return base
        n = self._counters.get(base, 0)
        while True:
            n += 1
            candidate = f"{base}_{n}"
            if candidate not in self._names:
                self._counters[base] = n
                return candidate

    def _claim(self, name: str | None, base: str) -> str:
        if name is None:
            name = self.unique(base)
        elif name in self._names:
            raise ValueError(f"name {name!r} is already used in this function")
        elif not _valid_name(name):
            raise ValueError(f"invalid MIL identifier {name!r}")
        self._names.add(name)
        return name

    # ---- inputs, constants, outputs -------------------------------------------------------

    def input(self, name: str, dtype: DType, shape: Sequence[int]) -> Var:
        var = Var(self._claim(name, name), TensorType(dtype, tuple(shape)))
        self.function.inputs.append(var)
        return var

    def const(self, value: Any, name: str | None = None, dtype: DType | None = None) -> Var:
        """A ``const`` statement; ``dtype`` defaults to bool/int32/fp16/string by value."""
        lit = literal(dtype, value) if dtype is not None else literal_from_python(value)
        return self._const_literal(lit, name, "const")

    def weight(self, name: str, dtype: DType, shape: Sequence[int], file: str, offset: int) -> Var:
        """A ``const`` whose data is a BLOBFILE reference (``file`` under ``weights/``)."""
        return self._const_literal(self.blob(dtype, shape, file, offset), name, name)

    @staticmethod
    def blob(dtype: DType, shape: Sequence[int], file: str, offset: int) -> Literal:
        """A BLOBFILE literal to pass inline, e.g. as constexpr ``quantized_data``."""
        ref = BlobRef(WEIGHT_PATH.format(file), int(offset))
        return Literal(TensorType(dtype, tuple(shape)), ref)

    def _const_literal(self, lit: Literal, name: str | None, base: str) -> Var:
        name = self._claim(name, base)
        out = Var(name, lit.type)
        op = Operation("const", {}, {"name": literal(STRING, name), "val": lit}, [out])
        out.op = op
        self.function.operations.append(op)
        return out

    def returns(self, *outputs: Var) -> None:
        self.function.outputs = list(outputs)

    def program(self, build_info: dict[str, str] | None = None) -> Program:
        if not self.function.outputs:
            raise MILTypeError("the function returns nothing; call returns(...) first")
        return Program(
            self.dialect.program_version,
            {self.function.name: self.function},
            dict(build_info if build_info is not None else DEFAULT_BUILD_INFO),
        )

    # ---- operations -----------------------------------------------------------------------

    def op(self, op_type: str, *args: Any, name: str | None = None, **kwargs: Any) -> Var:
        """Add ``op_type`` with positional arguments in the registry's call order."""
        spec = get_spec(op_type)
        if op_type == "const":
            raise TypeError("use Builder.const() for constants")
        if not opset_at_least(self.dialect.opset, spec.min_opset):
            raise MILTypeError(
                f"{op_type} needs opset {spec.min_opset}, but target {self.dialect.target} "
                f"has {self.dialect.opset}"
            )
        if len(args) > len(spec.params):
            raise TypeError(f"{op_type}() takes at most {len(spec.params)} positional arguments")
        unknown = [k for k in kwargs if spec.param(k) is None]
        if unknown:
            raise TypeError(f"{op_type}() got an unexpected argument '{unknown[0]}'")
        bound: dict[str, Any] = {}
        for param, value in zip(spec.params, args, strict=False):
            bound[param.name] = value
        for key, value in kwargs.items():
            if key in bound:
                raise TypeError(f"{op_type}() got multiple values for '{key}'")
            bound[key] = value
        snapshot = (len(self.function.operations), set(self._names), dict(self._counters))
        try:
            return self._add_op(spec, op_type, name, bound)
        except Exception:
            del self.function.operations[snapshot[0] :]
            self._names, self._counters = snapshot[1], snapshot[2]
            raise

    def _add_op(self, spec: OpSpec, op_type: str, name: str | None, bound: dict[str, Any]) -> Var:
        out_name = self._claim(name, op_type)
        resolved: dict[str, Arg] = {}
        for param in spec.params:
            if param.name in bound and bound[param.name] is not None:
                value = bound[param.name]
            elif param.default is not None:
                default = param.default(bound) if callable(param.default) else param.default
                value = literal(*default)
            else:
                continue
            resolved[param.name] = self._as_arg(
                value,
                f"{out_name}_{param.name}",
                variadic=param.variadic,
                inline=spec.attributes_only,
            )
        try:
            out_type = infer_type(op_type, resolved, self.dialect.opset)
        except MILTypeError as err:
            raise MILTypeError(f"{err.message} (building '{out_name}')") from None
        out = Var(out_name, out_type)
        if spec.attributes_only:
            attrs = {"name": literal(STRING, out_name)}
            attrs.update({k: v for k, v in resolved.items() if isinstance(v, Literal)})
            attributes = {k: attrs[k] for k in sorted(attrs)}
            op = Operation(op_type, {}, attributes, [out])
        else:
            ordered = {k: resolved[k] for k in spec.ordered(list(resolved))}
            op = Operation(op_type, ordered, {"name": literal(STRING, out_name)}, [out])
        out.op = op
        self.function.operations.append(op)
        return out

    def _as_arg(self, value: Any, const_name: str, variadic: bool, inline: bool) -> Arg:
        if variadic:
            if not isinstance(value, list | tuple):
                raise TypeError(f"'{const_name}' expects a list of values")
            return tuple(
                self._as_arg(v, f"{const_name}_{i}", False, inline) for i, v in enumerate(value)
            )
        if isinstance(value, Var):
            if inline:
                if value.op is None or value.op.op_type != "const":
                    raise MILTypeError(f"'{const_name}' must be a constant")
                return value.op.attributes["val"]
            return value
        lit = value if isinstance(value, Literal) else literal_from_python(value)
        if inline:
            return lit
        return self._const_literal(lit, None, const_name)

    def __getattr__(self, op_type: str) -> Any:
        if op_type.startswith("_"):
            raise AttributeError(op_type)
        try:
            get_spec(op_type)
        except MILTypeError:
            raise AttributeError(f"Builder has no op '{op_type}'") from None

        def method(*args: Any, name: str | None = None, **kwargs: Any) -> Var:
            return self.op(op_type, *args, name=name, **kwargs)

        method.__name__ = op_type
        return method
