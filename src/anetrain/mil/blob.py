"""MILBlob storage v2: the ``weights/weight.bin`` file that MIL ``BLOBFILE`` constants point into.

Layout (little-endian), byte-identical to coremltools' ``MILBlob::Blob::StorageWriter``:

* 64-byte file header: ``u32 count``, ``u32 version`` (= 2), 56 zero bytes.
* Per blob, starting at the next 64-byte boundary: a 64-byte metadata record (``u32`` sentinel
  ``0xDEADBEEF``, ``u32`` dtype code, ``u64`` size in bytes, ``u64`` absolute data offset,
  ``u64`` padding bits (sub-byte types only), 32 reserved zero bytes) followed immediately by
  the raw data. Gaps before the next record are zero; the file is *not* padded after the last
  blob.

A MIL ``BLOBFILE(path=..., offset=uint64(N))`` offset is the offset of the metadata record, not of
the data. See ``docs/formats-milblob.md`` for the byte table.
"""

from __future__ import annotations

import mmap as _mmap
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from anetrain.errors import WeightFileError
from anetrain.fsutil import atomic_write

__all__ = [
    "ALIGNMENT",
    "HEADER_SIZE",
    "METADATA_SIZE",
    "SENTINEL",
    "VERSION",
    "BlobDType",
    "BlobEntry",
    "BlobFile",
    "BlobWriter",
    "blob_bytes",
    "read_blob_file",
    "write_blob_file",
]

ALIGNMENT = 64
HEADER_SIZE = 64
METADATA_SIZE = 64
SENTINEL = 0xDEADBEEF
VERSION = 2

# count, version, 7 x u64 reserved.
_HEADER = struct.Struct("<II56x")
# sentinel, dtype, sizeInBytes, offset, padding_size_in_bits, 4 x u64 reserved.
_METADATA = struct.Struct("<IIQQQ32x")
assert _HEADER.size == HEADER_SIZE and _METADATA.size == METADATA_SIZE
_U32_MAX = 0xFFFFFFFF
_MAX_LISTED = 8


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


class BlobDType(IntEnum):
    """``MILBlob::Blob::BlobDataType`` codes (coremltools 9 ``BlobDataType.hpp``).

    All codes are listed so files holding sub-byte, bf16 or fp8 blobs still parse; only the
    byte-sized types NumPy can represent natively can be written or read as typed arrays (the
    others are available as raw bytes through :meth:`BlobFile.read_raw`).
    """

    FLOAT16 = 1
    FLOAT32 = 2
    UINT8 = 3
    INT8 = 4
    BFLOAT16 = 5
    INT16 = 6
    UINT16 = 7
    INT4 = 8
    UINT1 = 9
    UINT2 = 10
    UINT4 = 11
    UINT3 = 12
    UINT6 = 13
    INT32 = 14
    UINT32 = 15
    FLOAT8E4M3FN = 16
    FLOAT8E5M2 = 17

    @property
    def numpy_dtype(self) -> np.dtype | None:
        """Little-endian NumPy dtype for this code, or ``None`` if NumPy has no native match."""
        return _TO_NUMPY.get(self)

    @property
    def supported(self) -> bool:
        """Whether arrays of this type can be written and read as typed NumPy arrays."""
        return self in _TO_NUMPY

    @classmethod
    def from_numpy(cls, dtype: Any) -> BlobDType:
        """Map a NumPy dtype (any byte order) to its code; unsupported dtypes raise."""
        try:
            dt = np.dtype(dtype)
        except TypeError as exc:
            raise WeightFileError(
                f"{dtype!r} is not a NumPy dtype with a MILBlob equivalent; "
                f"cast to one of {_supported_names()}"
            ) from exc
        key = (dt.kind, dt.itemsize)
        if key not in _FROM_NUMPY:
            raise WeightFileError(
                f"NumPy dtype {dt} has no MILBlob equivalent; "
                f"cast to one of {_supported_names()} first (e.g. arr.astype(np.float16))"
            )
        return _FROM_NUMPY[key]


_TO_NUMPY: dict[BlobDType, np.dtype] = {
    BlobDType.FLOAT16: np.dtype("<f2"),
    BlobDType.FLOAT32: np.dtype("<f4"),
    BlobDType.UINT8: np.dtype("u1"),
    BlobDType.INT8: np.dtype("i1"),
    BlobDType.INT16: np.dtype("<i2"),
    BlobDType.UINT16: np.dtype("<u2"),
    BlobDType.INT32: np.dtype("<i4"),
    BlobDType.UINT32: np.dtype("<u4"),
}
_FROM_NUMPY: dict[tuple[str, int], BlobDType] = {
    (dt.kind, dt.itemsize): code for code, dt in _TO_NUMPY.items()
}


def _supported_names() -> str:
    return ", ".join(str(dt) for dt in _TO_NUMPY.values()).replace("<", "")


def _dtype_name(code: int) -> str:
    try:
        return BlobDType(code).name.lower()
    except ValueError:
        return f"code {code}"


def _list_offsets(offsets: Sequence[int]) -> str:
    shown = ", ".join(str(o) for o in offsets[:_MAX_LISTED])
    if len(offsets) > _MAX_LISTED:
        shown += f", ... ({len(offsets)} total)"
    return shown or "none"


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


class BlobWriter:
    """Accumulates arrays in memory and serialises them as one MILBlob v2 file.

    Offsets are known as soon as an array is added, so MIL text can reference blobs before the
    file exists; the bytes produced equal what coremltools' ``_BlobStorageWriter`` writes for the
    same sequence of arrays (correct header count, sizes and data offsets).
    """

    def __init__(self) -> None:
        self._blobs: list[tuple[int, BlobDType, bytes]] = []  # (metadata offset, dtype, data)
        self._end = HEADER_SIZE  # file length so far; no trailing padding after the last blob
        self._reserved = False

    def __len__(self) -> int:
        return len(self._blobs)

    @property
    def offsets(self) -> list[int]:
        """Metadata offsets of the blobs added so far, in order (the BLOBFILE offsets)."""
        return [off for off, _, _ in self._blobs]

    @property
    def nbytes(self) -> int:
        """Length in bytes of the file :meth:`to_bytes` would produce."""
        return self._end

    def add(self, array: np.ndarray) -> int:
        """Append ``array`` (flattened in C order) and return its BLOBFILE (metadata) offset.

        The data is copied immediately so later mutation of ``array`` cannot change the file.
        Non-C-contiguous arrays are rejected rather than silently copied: a transposed or strided
        view is usually a layout mistake, and ``np.ascontiguousarray`` makes the intent explicit.
        """
        if not isinstance(array, np.ndarray):
            raise WeightFileError(
                f"blob #{len(self._blobs)}: expected a numpy.ndarray, got {type(array).__name__}; "
                "convert with np.asarray(x, dtype=...) first"
            )
        code = BlobDType.from_numpy(array.dtype)
        if not array.flags.c_contiguous:
            raise WeightFileError(
                f"blob #{len(self._blobs)}: array with shape {array.shape} is not C-contiguous; "
                "pass np.ascontiguousarray(arr) to store it in row-major order"
            )
        if len(self._blobs) >= _U32_MAX:
            raise WeightFileError(
                f"blob #{len(self._blobs)}: a MILBlob file holds at most {_U32_MAX} blobs; "
                "split the weights across several files"
            )
        le = _TO_NUMPY[code]
        data = (array if array.dtype == le else array.astype(le)).tobytes()
        offset = _align(self._end)
        self._blobs.append((offset, code, data))
        self._end = offset + METADATA_SIZE + len(data)
        return offset

    def reserve(self, nbytes: int, dtype: np.dtype | type = np.float16) -> int:
        """The offset :meth:`add` would give an array of ``nbytes`` bytes, without its data:
        for programs that are only analysed (cost models), never compiled. A writer that has
        reserved blobs cannot serialise."""
        offset = _align(self._end)
        self._blobs.append((offset, BlobDType.from_numpy(np.dtype(dtype)), b""))
        self._reserved = True
        self._end = offset + METADATA_SIZE + int(nbytes)
        return offset

    def extend(self, arrays: Iterable[np.ndarray]) -> list[int]:
        """Add several arrays; returns their metadata offsets."""
        return [self.add(a) for a in arrays]

    def _chunks(self) -> Iterator[bytes]:
        if self._reserved:
            raise WeightFileError("this writer only reserved offsets (no data); nothing to write")
        yield _HEADER.pack(len(self._blobs), VERSION)
        pos = HEADER_SIZE
        for offset, code, data in self._blobs:
            if offset > pos:
                yield bytes(offset - pos)
            yield _METADATA.pack(SENTINEL, int(code), len(data), offset + METADATA_SIZE, 0)
            yield data
            pos = offset + METADATA_SIZE + len(data)

    def to_bytes(self) -> bytes:
        """The complete file contents."""
        return b"".join(self._chunks())

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the file atomically: temp file in the same directory, fsync, ``os.replace``.

        Readers (or a crashed run) therefore see either the old file or the complete new one,
        never a truncated weight file.
        """
        try:
            atomic_write(path, self._chunks())
        except OSError as exc:
            raise WeightFileError(
                f"{path}: cannot write weight file ({exc.strerror or exc}); "
                "check that the directory exists and is writable"
            ) from exc


def blob_bytes(arrays: Iterable[np.ndarray]) -> tuple[bytes, list[int]]:
    """Serialise ``arrays`` in order; returns the file bytes and each blob's metadata offset."""
    writer = BlobWriter()
    offsets = writer.extend(arrays)
    return writer.to_bytes(), offsets


def write_blob_file(path: str | os.PathLike[str], arrays: Iterable[np.ndarray]) -> list[int]:
    """Atomically write ``arrays`` to ``path``; returns each blob's metadata offset."""
    writer = BlobWriter()
    offsets = writer.extend(arrays)
    writer.write(path)
    return offsets


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlobEntry:
    """One blob: ``offset`` is the metadata record (the BLOBFILE offset), ``size`` is in bytes."""

    offset: int
    dtype: BlobDType
    size: int
    data_offset: int


BufferSource = bytes | bytearray | memoryview


class BlobFile:
    """A parsed MILBlob v2 file; :meth:`read` returns zero-copy, read-only NumPy views.

    ``strict=True`` (default) accepts exactly the layout coremltools writes: header count equal
    to the number of records, zero header reserved bytes, data directly after each record, and at
    most 63 zero padding bytes after the last blob. ``strict=False`` exists for files from older
    writers that got the header wrong: it ignores the header ``count`` and reserved bytes and
    instead walks records until end of file (any all-zero tail is treated as padding), and lets a
    record's data start later than right after the record. Bad sentinels, unknown dtype codes,
    overlapping or out-of-file data are errors in both modes. The metadata reserved bytes are
    never checked: coremltools before iOS 18 left them uninitialised.
    """

    def __init__(self, buffer: BufferSource, *, source: str = "<bytes>", strict: bool = True):
        self._buf = memoryview(buffer).cast("B")
        self.source = source
        self.strict = strict
        size = len(self._buf)
        if size < HEADER_SIZE:
            raise self._error(
                0,
                f"file is {size} bytes, shorter than the {HEADER_SIZE}-byte MILBlob header",
                "the file is truncated or not a weight file; regenerate it",
            )
        count, version = _HEADER.unpack_from(self._buf, 0)
        if version != VERSION:
            hint = " (version 1 is the old Espresso blob_v1 format)" if version == 1 else ""
            raise self._error(
                4,
                f"unsupported MILBlob version {version}{hint}, expected {VERSION}",
                "re-export the weights with coremltools >= 5 or anetrain",
            )
        if strict and not _all_zero(self._buf, 8, HEADER_SIZE):
            raise self._error(
                8,
                "non-zero reserved bytes in the file header",
                "the file is corrupt or not a MILBlob v2 file; pass strict=False to ignore",
            )
        self.header_count: int = count
        self.entries: tuple[BlobEntry, ...] = tuple(
            self._walk_strict(count) if strict else self._walk_tolerant()
        )
        self._by_offset = {e.offset: e for e in self.entries}

    # ---- construction -----------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, strict: bool = True, mmap: bool = False
    ) -> BlobFile:
        """Read ``path``; ``mmap=True`` maps it instead of loading it (for large weight files)."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                if mmap and os.fstat(f.fileno()).st_size >= HEADER_SIZE:
                    buffer: BufferSource = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)
                else:
                    buffer = f.read()
        except OSError as exc:
            raise WeightFileError(
                f"{path}: cannot read weight file ({exc.strerror or exc}); "
                "check the path (BLOBFILE paths are relative to the model package)"
            ) from exc
        return cls(buffer, source=str(path), strict=strict)

    # ---- parsing ----------------------------------------------------------------------------

    def _error(self, offset: int, what: str, fix: str) -> WeightFileError:
        return WeightFileError(f"{self.source} at byte {offset}: {what}; {fix}")

    def _record(self, pos: int) -> BlobEntry:
        size = len(self._buf)
        if pos + METADATA_SIZE > size:
            raise self._error(
                pos,
                f"truncated: blob metadata record needs bytes {pos}..{pos + METADATA_SIZE} "
                f"but the file ends at {size}",
                "the file was cut short; regenerate it",
            )
        sentinel, code, nbytes, data_offset, _pad = _METADATA.unpack_from(self._buf, pos)
        if sentinel != SENTINEL:
            raise self._error(
                pos,
                f"bad blob metadata sentinel 0x{sentinel:08X} (expected 0x{SENTINEL:08X})",
                "the file is corrupt or was written with wrong offsets; regenerate it",
            )
        try:
            dtype = BlobDType(code)
        except ValueError:
            raise self._error(
                pos + 4,
                f"unknown blob dtype code {code} in the record at {pos}",
                f"known codes are 1..{int(max(BlobDType))}; "
                "the file is corrupt or uses a newer format revision",
            ) from None
        if data_offset < pos + METADATA_SIZE or (
            self.strict and data_offset != pos + METADATA_SIZE
        ):
            expected = "==" if self.strict else ">="
            raise self._error(
                pos + 16,
                f"blob data offset {data_offset} in the record at {pos} is invalid "
                f"(expected {expected} {pos + METADATA_SIZE})",
                "the writer stored a wrong offset; regenerate the file"
                + ("" if not self.strict else " or pass strict=False"),
            )
        if data_offset + nbytes > size:
            raise self._error(
                data_offset,
                f"truncated: the {_dtype_name(code)} blob of record {pos} needs {nbytes} bytes "
                f"at {data_offset}..{data_offset + nbytes} but the file ends at {size}",
                "the file was cut short or its size field is wrong; regenerate it",
            )
        np_dtype = dtype.numpy_dtype
        if np_dtype is not None and nbytes % np_dtype.itemsize:
            raise self._error(
                pos + 8,
                f"blob size {nbytes} in the record at {pos} is not a multiple of the "
                f"{dtype.name.lower()} item size {np_dtype.itemsize}",
                "the size field is wrong; regenerate the file",
            )
        return BlobEntry(pos, dtype, nbytes, data_offset)

    def _walk_strict(self, count: int) -> Iterator[BlobEntry]:
        size = len(self._buf)
        end = HEADER_SIZE
        for i in range(count):
            pos = _align(end)
            if pos >= size:
                raise self._error(
                    pos,
                    f"truncated: header declares {count} blobs but the file ends after {i}",
                    "regenerate the file, or pass strict=False if only the header count is wrong",
                )
            entry = self._record(pos)
            end = entry.data_offset + entry.size
            yield entry
        if end < size:
            pos = _align(end)
            if pos + 4 <= size and _read_u32(self._buf, pos) == SENTINEL:
                raise self._error(
                    0,
                    f"header count {count} is wrong: another blob record starts at byte {pos}",
                    "rewrite the file with anetrain, or pass strict=False to ignore the count",
                )
            if pos < size or not _all_zero(self._buf, end):
                raise self._error(
                    end,
                    f"{size - end} unexpected trailing bytes after the last of {count} blobs",
                    "the file is corrupt or the header count is wrong; pass strict=False "
                    "to ignore the header count",
                )

    def _walk_tolerant(self) -> Iterator[BlobEntry]:
        size = len(self._buf)
        pos = HEADER_SIZE
        while pos < size:
            if _all_zero(self._buf, pos, pos + METADATA_SIZE) and _all_zero(self._buf, pos):
                return  # zero padding up to end of file
            entry = self._record(pos)
            yield entry
            pos = _align(entry.data_offset + entry.size)

    # ---- access -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[BlobEntry]:
        return iter(self.entries)

    def __contains__(self, offset: object) -> bool:
        return offset in self._by_offset

    @property
    def offsets(self) -> list[int]:
        """Metadata offsets of all blobs (the valid BLOBFILE offsets)."""
        return [e.offset for e in self.entries]

    @property
    def nbytes(self) -> int:
        """File length in bytes."""
        return len(self._buf)

    def entry(self, offset: int) -> BlobEntry:
        """The blob whose metadata record is at ``offset``; other offsets raise with a hint."""
        try:
            return self._by_offset[offset]
        except (KeyError, TypeError):
            pass
        hint = ""
        for e in self.entries:
            if e.data_offset == offset:
                hint = (
                    f" (it is the data offset of the blob whose metadata is at {e.offset}; "
                    "BLOBFILE offsets point at the metadata record)"
                )
                break
        raise self._error(
            offset,
            f"no blob metadata record starts here{hint}",
            f"use one of the record offsets: {_list_offsets(self.offsets)}",
        )

    def read_raw(self, offset: int) -> np.ndarray:
        """The blob's bytes as a read-only ``uint8`` view, for any dtype (including sub-byte)."""
        e = self.entry(offset)
        return _readonly(np.frombuffer(self._buf, np.uint8, count=e.size, offset=e.data_offset))

    def read(
        self,
        offset: int,
        dtype: Any = None,
        shape: Sequence[int] | int | None = None,
    ) -> np.ndarray:
        """The blob at metadata ``offset`` as a zero-copy, read-only array.

        ``dtype`` (NumPy dtype or :class:`BlobDType`) and ``shape`` are what the MIL program
        declares; they are checked against the record so a wrong offset or type in the MIL text
        fails loudly instead of reinterpreting bytes. Without ``shape`` the result is 1-D.
        """
        e = self.entry(offset)
        if dtype is not None:
            want = dtype if isinstance(dtype, BlobDType) else BlobDType.from_numpy(dtype)
            if want != e.dtype:
                raise self._error(
                    offset,
                    f"blob is {e.dtype.name.lower()} but {want.name.lower()} was requested",
                    "fix the tensor type or the BLOBFILE offset in the MIL program",
                )
        np_dtype = e.dtype.numpy_dtype
        if np_dtype is None:
            raise self._error(
                offset,
                f"blob dtype {e.dtype.name.lower()} has no native NumPy type",
                "use read_raw() to get its packed bytes",
            )
        count = e.size // np_dtype.itemsize
        arr = _readonly(np.frombuffer(self._buf, np_dtype, count=count, offset=e.data_offset))
        if shape is None:
            return arr
        shape_t = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        if any(int(d) < 0 for d in shape_t):
            raise self._error(
                offset,
                f"shape {shape_t} has negative dimensions",
                "pass the static tensor shape declared in the MIL program",
            )
        expected = int(np.prod(shape_t, dtype=np.int64)) * np_dtype.itemsize
        if expected != e.size:
            raise self._error(
                offset,
                f"blob holds {e.size} bytes ({count} x {e.dtype.name.lower()}) but shape "
                f"{shape_t} needs {expected}",
                "fix the tensor shape or the BLOBFILE offset in the MIL program",
            )
        return arr.reshape(shape_t)


def _readonly(arr: np.ndarray) -> np.ndarray:
    # bytearray sources would give writable views; weights read from a file must not be mutated.
    arr.flags.writeable = False
    return arr


def _read_u32(buf: memoryview, pos: int) -> int:
    return struct.unpack_from("<I", buf, pos)[0]


def _all_zero(buf: memoryview, start: int, stop: int | None = None) -> bool:
    return not np.frombuffer(buf[start:stop], dtype=np.uint8).any()


def read_blob_file(
    source: str | os.PathLike[str] | BufferSource, strict: bool = True, *, mmap: bool = False
) -> BlobFile:
    """Parse a MILBlob v2 file from a path or from bytes; see :class:`BlobFile` for ``strict``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return BlobFile(source, strict=strict)
    return BlobFile.open(source, strict=strict, mmap=mmap)
