"""Shared helpers for model file formats: the error type, atomic writes, bounded reads."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from anetrain.errors import AnetrainError
from anetrain.fsutil import atomic_write


class ModelFileError(AnetrainError, ValueError):
    """A model/checkpoint file is truncated, oversized, or has an unsupported header."""


def write_atomic(path: str | Path, chunks: Iterable[bytes | np.ndarray]) -> None:
    """Atomically write byte chunks, arrays as little-endian float32."""
    atomic_write(
        path,
        (
            np.ascontiguousarray(c, dtype="<f4").tobytes() if isinstance(c, np.ndarray) else c
            for c in chunks
        ),
    )


class Reader:
    """Sequential little-endian reads from a memory map; size errors name the file."""

    def __init__(self, path: str | Path, offset: int = 0):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such file")
        size = self.path.stat().st_size
        if size == 0:
            raise ModelFileError(f"{self.path}: file is empty")
        self.buf = np.memmap(self.path, dtype=np.uint8, mode="r")
        self.pos = offset

    @property
    def size(self) -> int:
        return int(self.buf.size)

    def raw(self, n: int, what: str) -> bytes:
        """``n`` bytes (for struct headers)."""
        if self.pos + n > self.buf.size:
            raise ModelFileError(
                f"{self.path}: file too short for {what}: needs {self.pos + n} bytes, "
                f"has {self.buf.size}"
            )
        out = self.buf[self.pos : self.pos + n].tobytes()
        self.pos += n
        return out

    def f32(self, n: int, what: str) -> np.ndarray:
        end = self.pos + 4 * n
        if end > self.buf.size:
            raise ModelFileError(
                f"{self.path}: truncated while reading {what}: needs bytes "
                f"{self.pos}..{end}, file has {self.buf.size}"
            )
        out = self.buf[self.pos : end].view("<f4")  # read-only view; callers copy
        self.pos = end
        return out

    def skip_f32(self, n: int) -> None:
        self.pos += 4 * n

    def expect_end(self, expected_total: int, layout: str) -> None:
        if self.buf.size != expected_total:
            kind = "too short" if self.buf.size < expected_total else "too long"
            raise ModelFileError(
                f"{self.path}: file is {kind} for its header: {self.buf.size} bytes, "
                f"expected {expected_total} ({layout})"
            )
