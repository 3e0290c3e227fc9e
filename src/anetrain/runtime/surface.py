"""Surfaces: the flat byte buffers a kernel reads its inputs from and writes its outputs to.

On the ANE these are IOSurfaces holding a ``[1, C, H, W]`` tensor (usually ``[1, C, 1, S]``) in
row-major order, fp16 or fp32 as the MIL I/O type declares. Here a surface is any writable
buffer (a NumPy byte array by default; the ``ane`` backend passes the IOSurface's memory and a
lock). Channel-range helpers mirror the original's ``io_write_fp16_at`` / ``io_read_fp16`` /
``io_copy``: channel ``c`` occupies elements ``c*S .. c*S+S-1`` where ``S = H*W``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

from anetrain.memory import release_pages
from anetrain.mil.types import FP16, FP32, DType
from anetrain.runtime.errors import SurfaceError
from anetrain.runtime.fp16 import f16_bits_to_f32, f32_to_f16_bits, round_fp16

LockFn = Callable[[bool], AbstractContextManager[Any]]  # lock(read_only) -> context manager
# store(src [rows, cols], storage, row0, col0) -> done: a rounding block write (see ValueSurface)
BlockStore = Callable[[np.ndarray, np.ndarray, int, int], bool]


@dataclass(frozen=True)
class TensorSpec:
    """One kernel input or output: MIL name, dtype (fp16/fp32) and shape."""

    name: str
    dtype: DType
    shape: tuple[int, ...]

    @property
    def channels(self) -> int:
        return self.shape[1] if len(self.shape) > 1 else 1

    @property
    def spatial(self) -> int:
        return math.prod(self.shape[2:])

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class Surface:
    """A flat byte buffer holding one ``[1, C, H, W]`` tensor, with typed views and helpers.

    ``array`` / ``rows`` are zero-copy views (``rows`` is ``[C, H*W]``); ``write``/``read``
    convert to and from float32 (rounding to fp16 with round-to-nearest-even) for a channel
    range; ``copy_from`` is the raw surface-to-surface copy the pipelines use between kernels.
    """

    _storage_kind = "bytes"

    def __init__(
        self,
        shape: Sequence[int],
        dtype: DType = FP16,
        *,
        buffer: Any = None,
        lock: LockFn | None = None,
        name: str = "",
    ) -> None:
        if dtype not in (FP16, FP32):
            raise SurfaceError(f"surface dtype must be fp16 or fp32, got {dtype}")
        self.spec = TensorSpec(name, dtype, tuple(int(d) for d in shape))
        if len(self.spec.shape) < 2:
            raise SurfaceError(f"surface shape must be [1, C, ...], got {list(shape)}")
        if buffer is None:
            self.buffer = np.zeros(self.spec.nbytes, np.uint8)
        else:
            self.buffer = (
                np.frombuffer(buffer, np.uint8)
                if not isinstance(buffer, np.ndarray)
                else buffer.reshape(-1).view(np.uint8)
            )
            if self.buffer.size < self.spec.nbytes:
                raise SurfaceError(
                    f"buffer of {self.buffer.size} bytes is too small for {self.describe()} "
                    f"({self.spec.nbytes} bytes)"
                )
            if not self.buffer.flags.writeable:
                raise SurfaceError("surface buffer must be writable")
        self._lock = lock
        nelem = math.prod(self.spec.shape)
        typed = self.buffer[: self.spec.nbytes].view(_STORAGE[dtype])[:nelem]
        self._storage = typed.reshape(self.channels, self.spatial)

    # ---- description ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dtype(self) -> DType:
        return self.spec.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.spec.shape

    @property
    def channels(self) -> int:
        return self.spec.channels

    @property
    def spatial(self) -> int:
        return self.spec.spatial

    @property
    def nbytes(self) -> int:
        return self.spec.nbytes

    def describe(self) -> str:
        label = f"'{self.name}' " if self.name else ""
        return f"surface {label}{self.dtype}{list(self.shape)}"

    def __repr__(self) -> str:
        return f"<{self.describe()}>"

    def compatible(self, spec: TensorSpec) -> bool:
        return self.dtype == spec.dtype and self.shape == spec.shape

    # ---- views ----------------------------------------------------------------------------

    @property
    def array(self) -> np.ndarray:
        """Zero-copy view in the surface dtype (float16 or float32) with the tensor's shape."""
        return self._storage.view(self.dtype.numpy).reshape(self.shape)

    @property
    def rows(self) -> np.ndarray:
        """Zero-copy ``[C, S]`` view in the surface dtype."""
        return self._storage.view(self.dtype.numpy)

    @property
    def bits(self) -> np.ndarray:
        """Zero-copy ``[C, S]`` view of the raw elements (uint16 for fp16, float32 for fp32)."""
        return self._storage

    @contextlib.contextmanager
    def locked(self, read_only: bool = False) -> Iterator[Surface]:
        """Hold the backend's lock (IOSurfaceLock on the ANE) around direct buffer access."""
        if self._lock is None:
            yield self
        else:
            with self._lock(read_only):
                yield self

    # ---- channel-range helpers ------------------------------------------------------------

    def _range(self, ch_off: int, channels: int | None, what: str) -> slice:
        n = self.channels - ch_off if channels is None else channels
        if ch_off < 0 or n < 0 or ch_off + n > self.channels:
            raise SurfaceError(
                f"{what}: channels [{ch_off}, {ch_off + n}) out of range for {self.describe()} "
                f"with {self.channels} channels"
            )
        return slice(ch_off, ch_off + n)

    def write(self, data: Any, ch_off: int = 0) -> None:
        """Write ``data`` (``[C', S]``, ``[1, C', ...]`` or flat) at channel ``ch_off``.

        Floats are converted to the surface dtype (fp16: round to nearest even, overflow to
        inf), like the original's ``io_write_fp16_at``. float16 data is stored bit-exactly.
        """
        arr = np.asarray(data)
        if arr.size % self.spatial:
            raise SurfaceError(
                f"write: {arr.size} values are not a whole number of channels of "
                f"{self.spatial} elements ({self.describe()})"
            )
        flat = arr.reshape(-1, self.spatial)
        rows = self._range(ch_off, flat.shape[0], "write")
        with self.locked():
            self._store(flat, rows, slice(None))

    def write_block(self, data: Any, ch_off: int = 0, col: int = 0) -> None:
        """Write a ``[C', W']`` block at channels ``ch_off..`` and columns ``col..``: how the
        packed layouts put activations and weights side by side in one row."""
        arr = np.asarray(data)
        if arr.ndim != 2:
            raise SurfaceError(f"write_block: data must be [channels, width], got {arr.shape}")
        if col < 0 or col + arr.shape[1] > self.spatial:
            raise SurfaceError(
                f"write_block: columns [{col}, {col + arr.shape[1]}) out of range for "
                f"{self.describe()} with {self.spatial} columns"
            )
        rows = self._range(ch_off, arr.shape[0], "write_block")
        with self.locked():
            self._store(arr, rows, slice(col, col + arr.shape[1]))

    def _store(self, arr: np.ndarray, rows: slice, cols: slice) -> None:
        dst = self._storage[rows, cols]
        if self.dtype is FP32:
            np.copyto(dst, arr, casting="unsafe")
        elif arr.dtype == np.float16:
            np.copyto(dst, arr.view(np.uint16))
        else:
            f32_to_f16_bits(np.asarray(arr, np.float32), out=dst)

    def read(self, ch_off: int = 0, channels: int | None = None) -> np.ndarray:
        """A float32 copy of ``channels`` channels from ``ch_off`` as ``[channels, S]``."""
        rows = self._range(ch_off, channels, "read")
        with self.locked(read_only=True):
            return self._load(rows)

    def _load(self, rows: slice) -> np.ndarray:
        src = self._storage[rows]
        if self.dtype is FP32:
            return src.copy()
        return f16_bits_to_f32(src)

    def numpy(self) -> np.ndarray:
        """A float32 copy of the whole tensor in its declared shape."""
        return self.read().reshape(self.shape)

    def copy_from(
        self,
        src: Surface,
        *,
        dst_ch: int = 0,
        src_ch: int = 0,
        channels: int | None = None,
        dst_col: int = 0,
    ) -> None:
        """Raw copy of ``channels`` whole channels of ``src`` (the original's ``io_copy``),
        landing at ``dst_col`` when ``src`` rows are narrower than this surface's."""
        if src.dtype != self.dtype or src.spatial + dst_col > self.spatial:
            raise SurfaceError(
                f"io_copy: {src.describe()} does not fit {self.describe()} at column {dst_col}; "
                "need the same dtype and spatial room for the source rows"
            )
        n = min(src.channels - src_ch, self.channels - dst_ch) if channels is None else channels
        s = src._range(src_ch, n, "io_copy source")
        d = self._range(dst_ch, n, "io_copy destination")
        cols = slice(dst_col, dst_col + src.spatial)
        with src.locked(read_only=True), self.locked():
            if type(src)._storage_kind == type(self)._storage_kind:
                np.copyto(self._storage[d, cols], src._storage[s])
            else:
                self._store(src._load(s), d, cols)

    def fill(self, value: float) -> None:
        """Set every element to ``value`` (converted to the surface dtype)."""
        with self.locked():
            self.rows[...] = value

    def discard(self) -> int:
        """Declare the contents no longer needed: they are undefined until written again.
        Surfaces in memory the backend owns give their pages back (:class:`ValueSurface`);
        here (an IOSurface, or a caller's buffer) nothing changes. Returns the bytes given
        back."""
        return 0


_STORAGE = {FP16: np.dtype(np.uint16), FP32: np.dtype(np.float32)}


def io_write_fp16_at(surface: Surface, ch_off: int, data: Any) -> None:
    """The original's ``io_write_fp16_at(s, ch_off, data, C, S)``."""
    surface.write(data, ch_off)


def io_read_fp16(surface: Surface, ch_off: int, channels: int) -> np.ndarray:
    """The original's ``io_read_fp16(s, out, ch_off, C, S)``; returns ``[channels, S]``."""
    return surface.read(ch_off, channels)


def io_copy(dst: Surface, dst_ch: int, src: Surface, src_ch: int, channels: int) -> None:
    """The original's ``io_copy(dst, dst_ch, src, src_ch, C, S)`` raw channel copy."""
    dst.copy_from(src, dst_ch=dst_ch, src_ch=src_ch, channels=channels)


class ValueSurface(Surface):
    """A surface that keeps fp16 tensors as float32 *values* (each exactly fp16-representable).

    The simulator's own surfaces: holding what the hardware would hold, in the representation
    its NumPy ops compute in, so kernels read and write them without an fp16 encode/decode per
    eval. Writes round to fp16 exactly as :class:`Surface` encodes; ``bits`` and ``array`` are
    computed copies (the byte-exact fp16 view), ``values`` is the zero-copy ``[C, S]`` view.
    """

    _storage_kind = "values"

    def __init__(
        self,
        shape: Sequence[int],
        dtype: DType = FP16,
        *,
        name: str = "",
        storage: np.ndarray | None = None,
        store_block: BlockStore | None = None,
    ) -> None:
        """``storage``: an existing C-contiguous float32 array of the tensor's size to hold the
        values in (the simulator passes its plan's own output buffers). ``store_block``: a
        faster bit-identical rounding write (the simulator's fast path), tried first."""
        self._store_block = store_block
        if dtype not in (FP16, FP32):
            raise SurfaceError(f"surface dtype must be fp16 or fp32, got {dtype}")
        self.spec = TensorSpec(name, dtype, tuple(int(d) for d in shape))
        if len(self.spec.shape) < 2:
            raise SurfaceError(f"surface shape must be [1, C, ...], got {list(shape)}")
        self._lock = None
        rows = (self.channels, self.spatial)
        if storage is None:
            self._storage = np.zeros(rows, np.float32)
        else:
            if (
                storage.dtype != np.float32
                or not storage.flags.c_contiguous
                or storage.size != math.prod(rows)
            ):
                raise SurfaceError(
                    f"storage for {self.describe()} must be C-contiguous float32 of "
                    f"{math.prod(rows)} elements, got {storage.dtype}{list(storage.shape)}"
                )
            self._storage = storage.reshape(rows)
        self.buffer = self._storage.reshape(-1).view(np.uint8)

    @property
    def values(self) -> np.ndarray:
        """Zero-copy ``[C, S]`` float32 view of the stored values. (On a simulated kernel's
        staging input, undefined once another kernel of its backend has been evaluated.)"""
        return self._storage

    @property
    def array(self) -> np.ndarray:
        """A copy in the surface dtype with the tensor's shape."""
        return self._storage.astype(self.dtype.numpy).reshape(self.shape)

    @property
    def rows(self) -> np.ndarray:
        """A ``[C, S]`` copy in the surface dtype."""
        return self._storage.astype(self.dtype.numpy)

    @property
    def bits(self) -> np.ndarray:
        """A copy of the raw elements: fp16 bit patterns (uint16) or float32."""
        if self.dtype is FP32:
            return self._storage.copy()
        return f32_to_f16_bits(self._storage)

    def _store(self, arr: np.ndarray, rows: slice, cols: slice) -> None:
        if (
            self._store_block is not None
            and self.dtype is FP16
            and arr.ndim == 2
            and self._store_block(arr, self._storage, rows.start or 0, cols.start or 0)
        ):
            return
        dst = self._storage[rows, cols]
        if self.dtype is FP32 or arr.dtype == np.float16:
            np.copyto(dst, arr, casting="unsafe")
        else:
            round_fp16(np.ascontiguousarray(arr, np.float32), out=dst)

    def _load(self, rows: slice) -> np.ndarray:
        return self._storage[rows].copy()

    def fill(self, value: float) -> None:
        self._store(
            np.full((self.channels, self.spatial), value, np.float32), slice(None), slice(None)
        )

    def discard(self) -> int:
        """The contents become undefined (zeros on Linux) and the pages leave RSS until
        written again (:func:`anetrain.memory.release_pages`)."""
        return release_pages([self._storage])
