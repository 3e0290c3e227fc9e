"""MIL: the typed IR, its builder, the text dialects, weight blobs and validation."""

from anetrain.mil.builder import Builder
from anetrain.mil.dialect import IOS16, IOS18, Dialect, get_dialect
from anetrain.mil.ir import BlobRef, Function, Literal, Operation, Program, Var
from anetrain.mil.parser import parse_program
from anetrain.mil.printer import print_program
from anetrain.mil.types import BOOL, FP16, FP32, INT8, INT32, STRING, UINT8, DType, TensorType

__all__ = [
    "BOOL",
    "FP16",
    "FP32",
    "INT8",
    "INT32",
    "IOS16",
    "IOS18",
    "STRING",
    "UINT8",
    "BlobRef",
    "Builder",
    "DType",
    "Dialect",
    "Function",
    "Literal",
    "Operation",
    "Program",
    "TensorType",
    "Var",
    "get_dialect",
    "parse_program",
    "print_program",
]
