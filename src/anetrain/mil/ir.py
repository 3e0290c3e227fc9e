"""The MIL intermediate representation: programs, functions, operations, variables, literals.

The IR mirrors the text dialect closely (argument order, attribute order, the buildInfo
header) so that printing a parsed program reproduces its text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from anetrain.mil.types import DType, TensorType


@dataclass(frozen=True)
class BlobRef:
    """A ``BLOBFILE(path=..., offset=...)`` reference; ``offset`` points at the blob metadata."""

    path: str
    offset: int

    @property
    def file_name(self) -> str:
        """Path relative to the model directory, as weight dicts and files are keyed."""
        prefix = "@model_path/"
        return self.path[len(prefix) :] if self.path.startswith(prefix) else self.path


@dataclass(eq=False)
class Literal:
    """A constant written in the text: scalar, inline tensor, string, or BLOBFILE reference.

    ``data`` is a NumPy array of ``type``'s dtype and shape, a ``str`` for string scalars, or a
    :class:`BlobRef` whose data lives in a weight file.
    """

    type: TensorType
    data: np.ndarray | str | BlobRef

    @property
    def value(self) -> np.ndarray | str | None:
        """The value when known at build time (None for unresolved BLOBFILE data)."""
        return None if isinstance(self.data, BlobRef) else self.data

    @property
    def blob(self) -> BlobRef | None:
        return self.data if isinstance(self.data, BlobRef) else None

    def __repr__(self) -> str:
        return f"Literal({self.type}, {self.data!r})"


@dataclass(eq=False)
class Var:
    """A named SSA value: a function input or an operation output."""

    name: str
    type: TensorType
    op: Operation | None = None

    @property
    def value(self) -> np.ndarray | str | None:
        """Compile-time value, when this var is the output of a ``const`` with inline data."""
        if self.op is not None and self.op.op_type == "const":
            return self.op.attributes["val"].value
        return None

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


Arg = Var | Literal | tuple[Var | Literal, ...]


@dataclass(eq=False)
class Operation:
    """One statement: ``outputs = op_type(inputs)[attributes]``.

    ``attributes`` keeps text order and includes ``name`` (a string literal).
    """

    op_type: str
    inputs: dict[str, Arg]
    attributes: dict[str, Literal]
    outputs: list[Var]
    line: int | None = None
    col: int | None = None

    @property
    def name(self) -> str:
        attr = self.attributes.get("name")
        return attr.data if attr is not None and isinstance(attr.data, str) else ""

    def arg(self, key: str) -> Arg | None:
        """An input or (non-name) attribute by parameter name."""
        if key in self.inputs:
            return self.inputs[key]
        return self.attributes.get(key) if key != "name" else None

    def input_vars(self) -> Iterator[Var]:
        for value in self.inputs.values():
            items = value if isinstance(value, tuple) else (value,)
            for item in items:
                if isinstance(item, Var):
                    yield item

    def __repr__(self) -> str:
        outs = ", ".join(v.name for v in self.outputs)
        return f"<{self.op_type} {self.name!r} -> {outs}>"


@dataclass(eq=False)
class Function:
    name: str
    opset: str
    inputs: list[Var]
    operations: list[Operation] = field(default_factory=list)
    outputs: list[Var] = field(default_factory=list)

    def vars(self) -> dict[str, Var]:
        table = {v.name: v for v in self.inputs}
        for op in self.operations:
            for out in op.outputs:
                table[out.name] = out
        return table

    def blob_refs(self) -> list[BlobRef]:
        refs = []
        for op in self.operations:
            for lit in op.attributes.values():
                if lit.blob is not None:
                    refs.append(lit.blob)
        return refs


DEFAULT_BUILD_INFO: dict[str, str] = {
    "coremlc-component-MIL": "3510.2.1",
    "coremlc-version": "3505.4.1",
    "coremltools-component-milinternal": "",
    "coremltools-version": "9.0",
}


@dataclass(eq=False)
class Program:
    version: str
    functions: dict[str, Function]
    build_info: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_BUILD_INFO))

    @property
    def main(self) -> Function:
        if "main" in self.functions:
            return self.functions["main"]
        return next(iter(self.functions.values()))
