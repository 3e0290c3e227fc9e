"""MILBlob v2 reader/writer: byte-identity with coremltools, round trips and error messages."""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from anetrain.errors import AnetrainError, WeightFileError
from anetrain.mil.blob import (
    BlobDType,
    BlobEntry,
    BlobFile,
    BlobWriter,
    blob_bytes,
    read_blob_file,
    write_blob_file,
)

DTYPES = [np.float16, np.float32, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32]

# coremltools writer/reader method suffix per dtype; fp16 goes through uint16 bit patterns.
CML_NAME = {
    np.dtype(np.float16): "fp16",
    np.dtype(np.float32): "float",
    np.dtype(np.int8): "int8",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int16): "int16",
    np.dtype(np.uint16): "uint16",
    np.dtype(np.int32): "int32",
    np.dtype(np.uint32): "uint32",
}


@pytest.fixture(scope="module")
def cml():
    return pytest.importorskip("coremltools.libmilstoragepython")


def cml_write(cml, path: Path, arrays: list[np.ndarray]) -> list[int]:
    writer = cml._BlobStorageWriter(str(path), truncate_file=True)
    offsets = []
    for a in arrays:
        flat = np.ascontiguousarray(a).reshape(-1)
        if flat.dtype == np.float16:
            flat = flat.view(np.uint16)
        offsets.append(int(getattr(writer, f"write_{CML_NAME[a.dtype]}_data")(flat)))
    del writer  # flushes and closes the file
    return offsets


def cml_read(cml, path: Path, offset: int, dtype: np.dtype) -> np.ndarray:
    reader = cml._BlobStorageReader(str(path))
    out = getattr(reader, f"read_{CML_NAME[np.dtype(dtype)]}_data")(offset)
    return out.view(np.float16) if np.dtype(dtype) == np.float16 else out


def sample(dtype, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.standard_normal(n).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=n, endpoint=True, dtype=dt)


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype
    assert a.tobytes() == b.tobytes()  # bitwise, so NaN payloads and -0.0 count too


# --------------------------------------------------------------------------------------------
# Byte identity with coremltools
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 3, 5, 31, 32, 33, 64, 1000])
def test_single_blob_byte_identical(cml, tmp_path, dtype, n):
    arr = sample(dtype, n, seed=n)
    ref_offsets = cml_write(cml, tmp_path / "ref.bin", [arr])
    ours, offsets = blob_bytes([arr])
    assert offsets == ref_offsets == [64]
    assert ours == (tmp_path / "ref.bin").read_bytes()


def test_several_blobs_byte_identical(cml, tmp_path):
    arrays = [
        sample(np.float16, 5),
        sample(np.int8, 3),
        sample(np.float32, 16).reshape(4, 4),
        np.zeros(0, np.uint8),
        sample(np.uint8, 1),
        sample(np.float16, 256 * 3).reshape(3, 16, 16),
        sample(np.int16, 7),
        sample(np.uint32, 9),
        sample(np.float32, 17),
    ]
    ref_offsets = cml_write(cml, tmp_path / "ref.bin", arrays)
    ours, offsets = blob_bytes(arrays)
    assert offsets == ref_offsets
    assert ours == (tmp_path / "ref.bin").read_bytes()
    # And through the atomic file writer.
    assert write_blob_file(tmp_path / "ours.bin", arrays) == ref_offsets
    assert (tmp_path / "ours.bin").read_bytes() == (tmp_path / "ref.bin").read_bytes()


def test_coremltools_reserved_fields_are_zero(cml, tmp_path):
    cml_write(cml, tmp_path / "ref.bin", [sample(np.float16, 3), sample(np.int8, 70)])
    data = (tmp_path / "ref.bin").read_bytes()
    assert data[:8] == struct.pack("<II", 2, 2)
    assert data[8:64] == bytes(56)
    for rec in (64, 192):
        assert data[rec + 24 : rec + 64] == bytes(40)
    # No padding after the last blob: 192 + 64 + 70 bytes.
    assert len(data) == 192 + 64 + 70


def test_our_reader_reads_coremltools_files(cml, tmp_path):
    arrays = [sample(dt, 11 + i, seed=i) for i, dt in enumerate(DTYPES)]
    offsets = cml_write(cml, tmp_path / "ref.bin", arrays)
    bf = read_blob_file(tmp_path / "ref.bin")
    assert bf.offsets == offsets
    assert bf.header_count == len(arrays)
    for off, arr in zip(offsets, arrays, strict=True):
        assert_same(bf.read(off, dtype=arr.dtype, shape=arr.shape), arr)


def test_coremltools_reads_our_files(cml, tmp_path):
    arrays = [sample(dt, 2 * i + 1, seed=i) for i, dt in enumerate(DTYPES)]
    offsets = write_blob_file(tmp_path / "ours.bin", arrays)
    for off, arr in zip(offsets, arrays, strict=True):
        assert_same(cml_read(cml, tmp_path / "ours.bin", off, arr.dtype), arr)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arrays=st.lists(
        st.sampled_from(DTYPES).flatmap(
            lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, max_side=9))
        ),
        max_size=5,
    )
)
def test_property_identical_to_coremltools(cml, arrays):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ref.bin"
        ref_offsets = cml_write(cml, path, arrays)
        ours, offsets = blob_bytes(arrays)
        assert offsets == ref_offsets
        assert ours == path.read_bytes()


# --------------------------------------------------------------------------------------------
# Layout and round trips (no coremltools needed)
# --------------------------------------------------------------------------------------------


def test_seed_layout_single_fp16_256x256():
    w = (np.arange(256 * 256) % 97).astype(np.float16).reshape(256, 256)
    data, offsets = blob_bytes([w])
    assert offsets == [64]
    assert data[0:8] == bytes.fromhex("01000000 02000000")
    assert data[8:64] == bytes(56)
    assert data[64:68] == bytes.fromhex("EFBEADDE")
    assert struct.unpack_from("<I", data, 68)[0] == 1
    assert struct.unpack_from("<Q", data, 72)[0] == 256 * 256 * 2
    assert struct.unpack_from("<Q", data, 80)[0] == 128
    assert data[88:128] == bytes(40)
    assert data[128:] == w.tobytes()
    assert len(data) == 128 + 131072
    bf = read_blob_file(data)
    assert bf.entries == (BlobEntry(64, BlobDType.FLOAT16, 131072, 128),)
    assert_same(bf.read(64, np.float16, (256, 256)), w)


def test_padding_between_blobs_is_zero_and_aligned():
    data, offsets = blob_bytes([np.ones(3, np.int8), np.ones(1, np.float32)])
    assert offsets == [64, 192]
    assert data[128 + 3 : 192] == bytes(192 - 131)
    assert struct.unpack_from("<Q", data, 192 + 16)[0] == 256
    assert struct.unpack_from("<I", data, 0)[0] == 2


@settings(max_examples=100, deadline=None)
@given(
    arrays=st.lists(
        st.sampled_from(DTYPES).flatmap(
            lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4, max_side=7))
        ),
        max_size=6,
    )
)
def test_property_round_trip(arrays):
    data, offsets = blob_bytes(arrays)
    assert all(o % 64 == 0 for o in offsets)
    for strict in (True, False):
        bf = read_blob_file(data, strict=strict)
        assert bf.offsets == offsets
        assert bf.header_count == len(arrays)
        for off, arr in zip(offsets, arrays, strict=True):
            got = bf.read(off, dtype=arr.dtype, shape=arr.shape)
            assert got.shape == arr.shape
            assert_same(got, arr)


def test_read_is_zero_copy_and_read_only():
    arr = sample(np.float32, 8)
    data, (off,) = blob_bytes([arr])
    bf = read_blob_file(bytearray(data))
    out = bf.read(off)
    assert out.base is not None and not out.flags.owndata
    assert not out.flags.writeable
    assert out.shape == (8,)


def test_writer_copies_input_and_reports_offsets():
    arr = np.zeros(4, np.float16)
    w = BlobWriter()
    assert w.add(arr) == 64
    arr[:] = 1  # must not change the stored blob
    assert w.add(np.zeros(100, np.uint8)) == 192
    assert len(w) == 2 and w.offsets == [64, 192]
    data = w.to_bytes()
    assert len(data) == w.nbytes == 192 + 64 + 100
    assert_same(read_blob_file(data).read(64), np.zeros(4, np.float16))


def test_big_endian_input_is_stored_little_endian():
    arr = np.arange(5, dtype=">f4")
    data, (off,) = blob_bytes([arr])
    assert data, off
    assert_same(read_blob_file(data).read(off), np.arange(5, dtype="<f4"))


def test_write_file_atomic_and_overwrites(tmp_path):
    path = tmp_path / "weight.bin"
    path.write_bytes(b"old contents")
    offsets = write_blob_file(path, [np.ones((2, 2), np.float16)])
    assert offsets == [64]
    assert os.listdir(tmp_path) == ["weight.bin"]  # no temp file left behind
    bf = BlobFile.open(path)
    assert bf.source == str(path)
    assert_same(bf.read(64, shape=(2, 2)), np.ones((2, 2), np.float16))
    assert_same(BlobFile.open(path, mmap=True).read(64), np.ones(4, np.float16))


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "weight.bin"
    path.write_bytes(b"old contents")

    def boom(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(WeightFileError, match="cannot write weight file"):
        write_blob_file(path, [np.ones(3, np.float32)])
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["weight.bin"]


def test_write_creates_missing_directory(tmp_path):
    path = tmp_path / "nope" / "weight.bin"
    write_blob_file(path, [np.ones(3, np.float32)])
    assert read_blob_file(path).read(64, np.float32).tolist() == [1.0, 1.0, 1.0]


def test_write_into_a_file_path_fails_clearly(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(WeightFileError, match=r"cannot write weight file"):
        write_blob_file(tmp_path / "file" / "weight.bin", [np.ones(3, np.float32)])


def test_dtype_enum_mapping():
    assert BlobDType.from_numpy(np.float16) is BlobDType.FLOAT16
    assert BlobDType.from_numpy(">i2") is BlobDType.INT16
    assert BlobDType.FLOAT32.numpy_dtype == np.dtype("<f4")
    assert BlobDType.INT4.numpy_dtype is None and not BlobDType.INT4.supported
    assert [int(c) for c in BlobDType] == list(range(1, 18))


# --------------------------------------------------------------------------------------------
# Tolerant mode
# --------------------------------------------------------------------------------------------


def with_count(data: bytes, count: int) -> bytes:
    return struct.pack("<I", count) + data[4:]


@pytest.mark.parametrize("count", [0, 1, 5])
def test_wrong_header_count_strict_vs_tolerant(count):
    arrays = [sample(np.float16, 5), sample(np.int8, 70), sample(np.float32, 3)]
    data, offsets = blob_bytes(arrays)
    bad = with_count(data, count)
    with pytest.raises(WeightFileError, match="strict=False") as exc:
        read_blob_file(bad)
    assert "<bytes>" in str(exc.value)
    bf = read_blob_file(bad, strict=False)
    assert bf.header_count == count
    assert bf.offsets == offsets
    for off, arr in zip(offsets, arrays, strict=True):
        assert_same(bf.read(off, arr.dtype, arr.shape), arr)


def test_tolerant_accepts_trailing_zero_padding_and_reserved_bytes():
    data, offsets = blob_bytes([sample(np.int8, 3), sample(np.float16, 1)])
    padded = data + bytes(64 - len(data) % 64) + bytes(128)
    with pytest.raises(WeightFileError, match="trailing bytes"):
        read_blob_file(padded)
    assert read_blob_file(padded, strict=False).offsets == offsets
    # Padding only up to the next 64-byte boundary is fine even in strict mode.
    assert read_blob_file(data + bytes(64 - len(data) % 64)).offsets == offsets
    # Header reserved bytes.
    junk = data[:20] + b"\x01" + data[21:]
    with pytest.raises(WeightFileError, match="reserved"):
        read_blob_file(junk)
    assert read_blob_file(junk, strict=False).offsets == offsets


def test_metadata_reserved_bytes_are_ignored():
    # coremltools before iOS 18 left them uninitialised, so neither mode may reject them.
    data, _ = blob_bytes([sample(np.float32, 4)])
    junk = data[: 64 + 24] + b"\xab" * 40 + data[128:]
    for strict in (True, False):
        assert_same(read_blob_file(junk, strict=strict).read(64), sample(np.float32, 4))


def test_tolerant_accepts_data_offset_gap():
    arr = sample(np.float32, 4)
    data, _ = blob_bytes([arr])
    # Move the data 64 bytes further and point the record at it.
    moved = bytearray(data[:128]) + bytes(64) + data[128:]
    struct.pack_into("<Q", moved, 80, 192)
    with pytest.raises(WeightFileError, match=r"data offset 192 .*expected == 128"):
        read_blob_file(bytes(moved))
    assert_same(read_blob_file(bytes(moved), strict=False).read(64), arr)


# --------------------------------------------------------------------------------------------
# Bad input: every error is a WeightFileError naming what, where and what to do
# --------------------------------------------------------------------------------------------


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    assert isinstance(exc.value, AnetrainError)
    return msg


@pytest.mark.parametrize("strict", [True, False])
def test_shorter_than_header(tmp_path, strict):
    path = tmp_path / "weight.bin"
    path.write_bytes(b"\x01\x00\x00\x00\x02")
    with pytest.raises(WeightFileError) as exc:
        read_blob_file(path, strict=strict)
    msg = one_line(exc)
    assert str(path) in msg and "5 bytes" in msg and "header" in msg and "regenerate" in msg
    path.write_bytes(b"")
    with pytest.raises(WeightFileError, match="0 bytes"):
        read_blob_file(path, strict=strict, mmap=True)


def test_missing_file(tmp_path):
    with pytest.raises(WeightFileError, match="cannot read weight file"):
        read_blob_file(tmp_path / "absent.bin")


@pytest.mark.parametrize("version", [0, 1, 3])
def test_wrong_version(version):
    data, _ = blob_bytes([np.ones(2, np.float16)])
    bad = data[:4] + struct.pack("<I", version) + data[8:]
    for strict in (True, False):
        with pytest.raises(WeightFileError) as exc:
            read_blob_file(bad, strict=strict)
        msg = one_line(exc)
        assert f"version {version}" in msg and "at byte 4" in msg
        if version == 1:
            assert "Espresso" in msg


def test_bad_sentinel():
    data, _ = blob_bytes([np.ones(2, np.float16), np.ones(2, np.float16)])
    bad = data[:192] + b"\x00\x00\xad\xde" + data[196:]
    for strict in (True, False):
        with pytest.raises(WeightFileError) as exc:
            read_blob_file(bad, strict=strict)
        msg = one_line(exc)
        assert "at byte 192" in msg and "sentinel 0xDEAD0000" in msg and "0xDEADBEEF" in msg


@pytest.mark.parametrize("cut", [1, 10, 64, 70])
def test_truncated(tmp_path, cut):
    data, _ = blob_bytes([sample(np.float32, 10), sample(np.float32, 10)])
    path = tmp_path / "weight.bin"
    path.write_bytes(data[:-cut])
    for strict in (True, False):
        with pytest.raises(WeightFileError) as exc:
            read_blob_file(path, strict=strict)
        msg = one_line(exc)
        assert "truncated" in msg and str(path) in msg and "regenerate" in msg


def test_truncated_header_count_too_high_is_reported_in_strict_mode():
    data, _ = blob_bytes([sample(np.float32, 16)])
    with pytest.raises(WeightFileError, match=r"declares 2 blobs but the file ends after 1"):
        read_blob_file(with_count(data, 2))


def test_size_field_past_eof():
    data, _ = blob_bytes([sample(np.float32, 4)])
    bad = bytearray(data)
    struct.pack_into("<Q", bad, 72, 1 << 40)
    with pytest.raises(WeightFileError, match=r"at byte 128: truncated.*needs 1099511627776"):
        read_blob_file(bytes(bad))


def test_size_not_multiple_of_itemsize():
    data, _ = blob_bytes([sample(np.float32, 4)])
    bad = bytearray(data)
    struct.pack_into("<Q", bad, 72, 15)
    with pytest.raises(WeightFileError, match=r"size 15 .*item size 4"):
        read_blob_file(bytes(bad), strict=False)


def test_unknown_dtype_code():
    data, _ = blob_bytes([sample(np.float32, 4)])
    bad = bytearray(data)
    struct.pack_into("<I", bad, 68, 99)
    for strict in (True, False):
        with pytest.raises(WeightFileError) as exc:
            read_blob_file(bytes(bad), strict=strict)
        msg = one_line(exc)
        assert "unknown blob dtype code 99" in msg and "at byte 68" in msg


def test_known_but_unsupported_dtype_parses_and_reads_raw():
    data, _ = blob_bytes([np.arange(6, dtype=np.uint8)])
    bad = bytearray(data)
    struct.pack_into("<I", bad, 68, int(BlobDType.INT4))
    bf = read_blob_file(bytes(bad))
    assert bf.entries[0].dtype is BlobDType.INT4
    assert_same(bf.read_raw(64), np.arange(6, dtype=np.uint8))
    with pytest.raises(WeightFileError, match="read_raw"):
        bf.read(64)


def test_offset_not_a_record():
    data, _ = blob_bytes([sample(np.float16, 4), sample(np.float16, 4)])
    bf = read_blob_file(data)
    with pytest.raises(WeightFileError) as exc:
        bf.read(100)
    msg = one_line(exc)
    assert "at byte 100" in msg and "64, 192" in msg
    with pytest.raises(WeightFileError, match=r"data offset of the blob whose metadata is at 64"):
        bf.read(128)
    assert 64 in bf and 128 not in bf


def test_dtype_mismatch():
    bf = read_blob_file(blob_bytes([sample(np.float16, 4)])[0])
    with pytest.raises(WeightFileError) as exc:
        bf.read(64, dtype=np.float32)
    msg = one_line(exc)
    assert "float16" in msg and "float32" in msg and "at byte 64" in msg
    assert bf.read(64, dtype=BlobDType.FLOAT16).dtype == np.float16
    with pytest.raises(WeightFileError, match="float64 has no MILBlob equivalent"):
        bf.read(64, dtype=np.float64)


def test_shape_mismatch():
    bf = read_blob_file(blob_bytes([sample(np.float16, 12)])[0])
    assert bf.read(64, shape=(3, 4)).shape == (3, 4)
    assert bf.read(64, shape=12).shape == (12,)
    with pytest.raises(WeightFileError) as exc:
        bf.read(64, np.float16, (5, 5))
    msg = one_line(exc)
    assert "24 bytes" in msg and "(5, 5)" in msg and "needs 50" in msg
    with pytest.raises(WeightFileError, match="negative"):
        bf.read(64, shape=(-3, -4))


@pytest.mark.parametrize(
    "arr",
    [
        np.ones((4, 4), np.float16).T[:, ::2],
        np.ones((4, 4), np.float32, order="F"),
        np.ones(8, np.int8)[::2],
    ],
)
def test_write_rejects_non_contiguous(arr):
    with pytest.raises(WeightFileError) as exc:
        BlobWriter().add(arr)
    msg = one_line(exc)
    assert "C-contiguous" in msg and "np.ascontiguousarray" in msg


@pytest.mark.parametrize(
    "arr",
    [
        np.ones(3, np.float64),
        np.ones(3, np.int64),
        np.ones(3, bool),
        np.ones(3, np.complex64),
        np.array(["a"]),
        np.array([object()]),
    ],
)
def test_write_rejects_unsupported_dtype(arr):
    with pytest.raises(WeightFileError) as exc:
        blob_bytes([arr])
    msg = one_line(exc)
    assert str(arr.dtype) in msg and "float16" in msg and "cast" in msg


def test_write_rejects_non_array():
    with pytest.raises(WeightFileError, match=r"expected a numpy.ndarray, got list"):
        BlobWriter().add([1.0, 2.0])  # type: ignore[arg-type]
