"""Parse MIL text (both dialects) back into the IR, checking every statement's types.

Errors carry 1-based line and column so ``anetrain mil check`` can print ``FILE:LINE:COL``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from anetrain.errors import MILSyntaxError, MILTypeError
from anetrain.mil.dialect import opset_at_least
from anetrain.mil.ir import Arg, BlobRef, Function, Literal, Operation, Program, Var
from anetrain.mil.ops import get_spec, infer_type
from anetrain.mil.types import BOOL, STRING, DType, TensorType

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+|//[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]*\.?[0-9a-fA-F]*[pP][-+]?\d+
        |(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|inf|nan)(?![A-Za-z0-9_]))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<arrow>->)
  | (?P<punct>[()\[\]{}<>,=;])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    line: int
    col: int


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        col = pos - line_start + 1
        if match is None:
            raise MILSyntaxError(f"unexpected character {text[pos]!r}", line=line, col=col)
        kind = match.lastgroup or ""
        value = match.group()
        if kind == "number" and len(value) > MAX_NUMBER_CHARS:
            raise MILSyntaxError(
                f"number of {len(value)} characters (at most {MAX_NUMBER_CHARS})",
                line=line,
                col=col,
            )
        if kind != "ws":
            tokens.append(Token(kind, value, line, col))
        newlines = value.count("\n")
        if newlines:
            line += newlines
            line_start = match.start() + value.rfind("\n") + 1
        pos = match.end()
    tokens.append(Token("eof", "", line, pos - line_start + 1))
    return tokens


_SCALAR_DTYPES = {d.value: d for d in DType}
# Limits that keep hostile text from reaching Python's own limits (int digits, recursion) or
# allocating absurd arrays; real programs are far below all three.
MAX_NUMBER_CHARS = 400  # a float64 needs at most 17 significant digits; uint64 has 20
MAX_LIST_DEPTH = 16  # nested [...] literal lists (one per tensor dimension)
MAX_TENSOR_BYTES = 2**40  # 1 TiB: no tensor of a real program, and far below int64 overflow


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.opset = "ios18"

    # ---- token helpers --------------------------------------------------------------------

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def error(self, message: str, tok: Token | None = None) -> MILSyntaxError:
        tok = tok or self.tok
        return MILSyntaxError(message, line=tok.line, col=tok.col)

    def type_error(self, message: str, tok: Token) -> MILTypeError:
        return MILTypeError(message, line=tok.line, col=tok.col)

    def next(self) -> Token:
        tok = self.tok
        self.i += 1
        return tok

    def at(self, text: str) -> bool:
        return self.tok.text == text and self.tok.kind != "string"

    def expect(self, text: str) -> Token:
        if not self.at(text):
            found = repr(self.tok.text) if self.tok.kind != "eof" else "end of file"
            raise self.error(f"expected '{text}', found {found}")
        return self.next()

    def ident(self, what: str = "identifier") -> Token:
        if self.tok.kind != "ident":
            found = repr(self.tok.text) if self.tok.kind != "eof" else "end of file"
            raise self.error(f"expected {what}, found {found}")
        return self.next()

    # ---- grammar --------------------------------------------------------------------------

    def program(self) -> Program:
        if self.tok.text != "program":
            raise self.error("a MIL file starts with 'program(<version>)'")
        self.next()
        self.expect("(")
        if self.tok.kind != "number":
            raise self.error("expected the program version, e.g. 1.3")
        version = self.next().text
        self.expect(")")
        build_info: dict[str, str] = {}
        if self.at("["):
            build_info = self.build_info()
        self.expect("{")
        functions: dict[str, Function] = {}
        while self.at("func"):
            fn = self.function()
            if fn.name in functions:
                raise self.error(f"function '{fn.name}' defined twice")
            functions[fn.name] = fn
        self.expect("}")
        if self.tok.kind != "eof":
            raise self.error(f"unexpected {self.tok.text!r} after the program")
        if not functions:
            raise self.error("the program defines no function")
        return Program(version, functions, build_info)

    def build_info(self) -> dict[str, str]:
        self.expect("[")
        key = self.ident("'buildInfo'")
        if key.text != "buildInfo":
            raise self.error(f"unknown program attribute '{key.text}'", key)
        self.expect("=")
        self.expect("dict")
        self.expect("<")
        self.type()
        self.expect(",")
        self.type()
        self.expect(">")
        self.expect("(")
        self.expect("{")
        info: dict[str, str] = {}
        while self.at("{"):
            self.next()
            k = self.string()
            self.expect(",")
            info[k] = self.string()
            self.expect("}")
            if not self.at(","):
                break
            self.next()
        self.expect("}")
        self.expect(")")
        self.expect("]")
        return info

    def string(self) -> str:
        if self.tok.kind != "string":
            raise self.error("expected a string literal")
        raw = self.next().text[1:-1]
        return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), raw)

    def dtype(self) -> DType:
        tok = self.ident("a dtype")
        if tok.text not in _SCALAR_DTYPES:
            raise self.error(f"unknown dtype '{tok.text}'", tok)
        return _SCALAR_DTYPES[tok.text]

    def type(self) -> TensorType:
        if self.at("tensor"):
            self.next()
            self.expect("<")
            dtype = self.dtype()
            self.expect(",")
            self.expect("[")
            dims: list[int] = []
            while not self.at("]"):
                tok = self.tok
                if tok.kind != "number" or not re.fullmatch(r"\d+", tok.text):
                    raise self.error(f"expected a dimension, found {tok.text!r}")
                dims.append(int(self.next().text))
                if not self.at("]"):
                    self.expect(",")
            close = self.expect("]")
            self.expect(">")
            t = TensorType(dtype, tuple(dims))
            if t.numel * max(dtype.itemsize, 1) > MAX_TENSOR_BYTES:
                raise self.error(f"{t} is larger than {MAX_TENSOR_BYTES >> 40} TiB", close)
            return t
        return TensorType(self.dtype(), ())

    def function(self) -> Function:
        self.expect("func")
        name = self.ident("a function name").text
        self.expect("<")
        opset = self.ident("an opset such as ios18").text
        self.expect(">")
        self.expect("(")
        fn = Function(name, opset, inputs=[])
        self.opset = opset
        scope: dict[str, Var] = {}
        while not self.at(")"):
            t = self.type()
            tok = self.ident("an input name")
            if tok.text in scope:
                raise self.error(f"input '{tok.text}' declared twice", tok)
            var = Var(tok.text, t)
            scope[tok.text] = var
            fn.inputs.append(var)
            if not self.at(")"):
                self.expect(",")
        self.expect(")")
        self.expect("{")
        while not self.at("}"):
            fn.operations.append(self.statement(scope))
        self.expect("}")
        arrow = self.expect("->")
        self.expect("(")
        while not self.at(")"):
            tok = self.ident("a returned variable")
            if tok.text not in scope:
                raise self.type_error(f"returned variable '{tok.text}' is not defined", tok)
            fn.outputs.append(scope[tok.text])
            if not self.at(")"):
                self.expect(",")
        self.expect(")")
        self.expect(";")
        if not fn.outputs:
            raise self.type_error(f"function '{name}' returns nothing", arrow)
        return fn

    def statement(self, scope: dict[str, Var]) -> Operation:
        start = self.tok
        declared = self.type()
        out_tok = self.ident("the output variable name")
        if self.at(","):
            raise self.error("operations with several outputs are not supported")
        self.expect("=")
        op_tok = self.ident("an op name")
        try:
            spec = get_spec(op_tok.text)
        except MILTypeError as err:
            raise self.type_error(err.message, op_tok) from None
        if not opset_at_least(self.opset, spec.min_opset):
            raise self.type_error(
                f"{op_tok.text} needs opset {spec.min_opset}; this function is {self.opset}",
                op_tok,
            )
        self.expect("(")
        inputs: dict[str, Arg] = {}
        while not self.at(")"):
            key = self.ident("an argument name")
            self.expect("=")
            if key.text in inputs:
                raise self.error(f"argument '{key.text}' given twice", key)
            inputs[key.text] = self.arg(scope)
            if not self.at(")"):
                self.expect(",")
        self.expect(")")
        attributes: dict[str, Literal] = {}
        if self.at("["):
            self.next()
            while not self.at("]"):
                key = self.ident("an attribute name")
                self.expect("=")
                if key.text in attributes:
                    raise self.error(f"attribute '{key.text}' given twice", key)
                attributes[key.text] = self.literal()
                if not self.at("]"):
                    self.expect(",")
            self.expect("]")
        self.expect(";")
        if out_tok.text in scope:
            raise self.type_error(f"variable '{out_tok.text}' is defined twice", out_tok)
        name_attr = attributes.get("name")
        if name_attr is not None and name_attr.type.dtype is not STRING:
            raise self.type_error("the 'name' attribute must be a string", start)
        args: dict[str, Arg] = dict(inputs)
        if spec.attributes_only:
            args.update({k: v for k, v in attributes.items() if k != "name"})
        try:
            inferred = infer_type(op_tok.text, args, self.opset)
        except MILTypeError as err:
            raise self.type_error(err.message, op_tok) from None
        except (ValueError, TypeError, IndexError, KeyError, ArithmeticError) as err:
            # an argument of the wrong kind (a tensor where a scalar belongs, a string where
            # numbers do) that the op's rules did not anticipate: still the text's fault
            raise self.type_error(
                f"{op_tok.text}: arguments of the wrong kind or value ({err})", op_tok
            ) from None
        if inferred != declared:
            raise self.type_error(
                f"'{out_tok.text}' is declared {declared} but {op_tok.text} produces {inferred}",
                start,
            )
        out = Var(out_tok.text, declared)
        op = Operation(op_tok.text, inputs, attributes, [out], line=start.line, col=start.col)
        out.op = op
        scope[out.name] = out
        return op

    def arg(self, scope: dict[str, Var], nested: bool = False) -> Arg:
        if self.at("("):
            if nested:
                raise self.error("nested tuples are not allowed")
            self.next()
            items: list[Var | Literal] = []
            while not self.at(")"):
                item = self.arg(scope, nested=True)
                assert not isinstance(item, tuple)
                items.append(item)
                if not self.at(")"):
                    self.expect(",")
            self.expect(")")
            return tuple(items)
        tok = self.tok
        if tok.kind == "ident" and tok.text in ("true", "false"):
            self.next()
            return Literal(TensorType(BOOL), np.array(tok.text == "true"))
        if tok.kind == "ident" and not (
            self.peek().text in ("(", "<") and (tok.text == "tensor" or tok.text in _SCALAR_DTYPES)
        ):
            self.next()
            if tok.text not in scope:
                raise self.type_error(f"undefined variable '{tok.text}'", tok)
            return scope[tok.text]
        return self.literal()

    def literal(self) -> Literal:
        start = self.tok
        t = self.type()
        self.expect("(")
        if self.at("BLOBFILE"):
            lit = self.blobfile(t)
        elif t.dtype is STRING:
            if not t.is_scalar:
                raise self.error("string tensors are not supported", start)
            lit = Literal(t, self.string())
        elif self.at("["):
            values = self.flat_list()
            if len(values) != t.numel:
                raise self.type_error(
                    f"literal {t} needs {t.numel} values, found {len(values)}", start
                )
            lit = Literal(t, self.convert(values, t.dtype, start).reshape(t.shape))
        else:
            value = self.scalar_token()
            if not t.is_scalar and t.numel != 1:
                raise self.type_error(f"literal {t} needs a list of {t.numel} values", start)
            lit = Literal(t, self.convert([value], t.dtype, start).reshape(t.shape))
        self.expect(")")
        return lit

    def blobfile(self, t: TensorType) -> Literal:
        self.expect("BLOBFILE")
        self.expect("(")
        fields: dict[str, Literal] = {}
        while not self.at(")"):
            key = self.ident("'path' or 'offset'")
            self.expect("=")
            fields[key.text] = self.literal()
            if not self.at(")"):
                self.expect(",")
        close = self.expect(")")
        if set(fields) != {"path", "offset"}:
            raise self.error("BLOBFILE needs exactly 'path' and 'offset'", close)
        path, offset = fields["path"].data, fields["offset"].data
        if (
            not isinstance(path, str)
            or not isinstance(offset, np.ndarray)
            or offset.size != 1
            or offset.dtype.kind not in "iu"
            or int(offset) < 0
        ):
            raise self.error("BLOBFILE path must be a string and offset an integer", close)
        return Literal(t, BlobRef(path, int(offset)))

    def flat_list(self, depth: int = 1) -> list[Token]:
        start = self.expect("[")
        if depth > MAX_LIST_DEPTH:
            raise self.error(f"list literal nested deeper than {MAX_LIST_DEPTH} levels", start)
        values: list[Token] = []
        while not self.at("]"):
            if self.at("["):
                values += self.flat_list(depth + 1)
            else:
                values.append(self.scalar_token())
            if not self.at("]"):
                self.expect(",")
        self.expect("]")
        return values

    def scalar_token(self) -> Token:
        tok = self.tok
        if tok.kind == "number" or (tok.kind == "ident" and tok.text in ("true", "false")):
            return self.next()
        raise self.error(f"expected a value, found {tok.text!r}")

    def convert(self, values: list[Token], dtype: DType, where: Token) -> np.ndarray:
        out = []
        for tok in values:
            text = tok.text
            if dtype is BOOL:
                if text not in ("true", "false"):
                    raise self.type_error(f"expected true or false, found {text!r}", tok)
                out.append(text == "true")
            elif text in ("true", "false"):
                raise self.type_error(f"{dtype} literal cannot be {text}", tok)
            elif dtype.is_float:
                try:
                    value = float.fromhex(text) if "0x" in text.lower() else float(text)
                except (ValueError, OverflowError):
                    raise self.type_error(
                        f"{text!r} is not a {dtype} value (a hex float needs digits and an "
                        "exponent in range, e.g. 0x1.8p-3)",
                        tok,
                    ) from None
                if math.isinf(value) and "inf" not in text:  # 1e99999: write inf if meant
                    raise self.type_error(f"{text} is out of range for a float; write inf", tok)
                out.append(value)
            else:
                if not re.fullmatch(r"[-+]?\d+", text):
                    raise self.type_error(f"{dtype} literal needs an integer, found {text}", tok)
                value = int(text)
                info = np.iinfo(dtype.numpy)
                if not info.min <= value <= info.max:
                    raise self.type_error(f"{value} is out of range for {dtype}", tok)
                out.append(value)
        with np.errstate(over="ignore"):
            return np.array(out, dtype=dtype.numpy)


def parse_program(text: str) -> Program:
    """Parse MIL text into a :class:`Program`; raises :class:`MILError` with line/column."""
    return _Parser(text).program()
