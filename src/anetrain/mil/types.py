"""MIL value types: element dtypes and statically shaped tensor types.

A scalar is a rank-0 tensor type; the text dialects differ only in how they spell it
(``fp16`` in program(1.3), ``tensor<fp16, []>`` in program(1.0)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np


class DType(Enum):
    """Element types that appear in the programs we build and parse."""

    FP16 = "fp16"
    FP32 = "fp32"
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT64 = "uint64"
    BOOL = "bool"
    STRING = "string"

    @property
    def numpy(self) -> np.dtype:
        if self is DType.STRING:
            return np.dtype(object)
        return np.dtype(_NUMPY[self])

    @property
    def is_float(self) -> bool:
        return self in (DType.FP16, DType.FP32)

    @property
    def is_int(self) -> bool:
        return self in (
            DType.INT8,
            DType.UINT8,
            DType.INT16,
            DType.UINT16,
            DType.INT32,
            DType.UINT64,
        )

    @property
    def itemsize(self) -> int:
        return 0 if self is DType.STRING else self.numpy.itemsize

    @classmethod
    def parse(cls, name: str) -> DType:
        try:
            return cls(name)
        except ValueError:
            known = ", ".join(d.value for d in cls)
            raise ValueError(f"unknown dtype {name!r} (known: {known})") from None

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> DType:
        dt = np.dtype(dtype)
        for member, name in _NUMPY.items():
            if np.dtype(name) == dt:
                return member
        raise ValueError(f"numpy dtype {dt} has no MIL equivalent")

    def __str__(self) -> str:
        return self.value


_NUMPY = {
    DType.FP16: "float16",
    DType.FP32: "float32",
    DType.INT8: "int8",
    DType.UINT8: "uint8",
    DType.INT16: "int16",
    DType.UINT16: "uint16",
    DType.INT32: "int32",
    DType.UINT64: "uint64",
    DType.BOOL: "bool",
}

FP16, FP32, INT8, UINT8, INT32, BOOL, STRING = (
    DType.FP16,
    DType.FP32,
    DType.INT8,
    DType.UINT8,
    DType.INT32,
    DType.BOOL,
    DType.STRING,
)


@dataclass(frozen=True)
class TensorType:
    """A tensor of ``dtype`` with a fully static ``shape``; ``shape == ()`` is a scalar."""

    dtype: DType
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d < 0 for d in self.shape):
            raise ValueError(f"negative dimension in shape {self.shape}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_scalar(self) -> bool:
        return not self.shape

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def with_shape(self, shape: tuple[int, ...]) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"tensor<{self.dtype}, [{dims}]>"


def scalar(dtype: DType) -> TensorType:
    return TensorType(dtype, ())


def tensor(dtype: DType, *shape: int) -> TensorType:
    return TensorType(dtype, tuple(shape))
