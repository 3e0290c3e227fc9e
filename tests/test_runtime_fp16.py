"""fp16 rounding and conversion: bit-exact against NumPy's float16 over sampled bit patterns."""

from __future__ import annotations

import numpy as np
import pytest

from anetrain.runtime.fp16 import (
    f16_bits_to_f32,
    f32_to_f16_bits,
    flush_subnormals,
    round_fp16,
)


def reference(x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return x.astype(np.float16)


def check_exact(x: np.ndarray) -> None:
    ref = reference(x)
    ref32 = ref.astype(np.float32)
    got = round_fp16(x)
    nan = np.isnan(ref32)
    assert np.array_equal(np.isnan(got), nan)
    bad = (got.view(np.uint32) != ref32.view(np.uint32)) & ~nan
    assert not bad.any(), (
        f"round_fp16 differs at {x[bad][:5]!r}: {got[bad][:5]} vs {ref32[bad][:5]}"
    )
    bits = f32_to_f16_bits(x)
    bad = bits != ref.view(np.uint16)
    assert not bad.any(), f"f32_to_f16_bits differs at {x[bad][:5]!r}"


EDGES = np.array(
    [
        0.0,
        -0.0,
        np.inf,
        -np.inf,
        np.nan,
        -np.nan,
        65504.0,
        -65504.0,
        65519.996,
        65520.0,
        -65520.0,
        65536.0,
        1e30,
        -1e30,
        3.4e38,
        2.0**-14,
        2.0**-14 * (1 - 2**-11),
        2.0**-24,
        2.0**-25,
        2.0**-25 * 1.0000001,
        -(2.0**-25),
        2.0**-26,
        1e-45,
        -1e-45,
        1.17549435e-38,
        1.0 + 2**-11,
        1.0 + 3 * 2**-11,
        1.0 + 2**-11 + 2**-20,
        2047.5,
        2048.5,
        4095.0,
        2.0**-24 * 1.5,
        2.0**-24 * 2.5,
        -(2.0**-24) * 0.5,
    ],
    dtype=np.float32,
)


def test_edge_cases() -> None:
    check_exact(EDGES)
    got = round_fp16(EDGES)
    assert got[8] == 65504.0 and np.isinf(got[9]) and got[9] > 0  # 65520 is the overflow tie
    assert np.signbit(got[1]) and np.signbit(got[20]) and got[20] == 0  # -2**-25 -> -0


def test_all_ties_and_neighbours_around_every_fp16_value() -> None:
    """Every fp16 value, the midpoints between neighbours, and one float32 ulp either side."""
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    f = h[np.isfinite(h)].astype(np.float32)
    f = np.unique(f)
    mids = ((f[:-1].astype(np.float64) + f[1:]) / 2).astype(np.float32)
    around = np.concatenate(
        [mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf)), f]
    )
    check_exact(around)


@pytest.mark.parametrize("seed", range(4))
def test_random_bit_patterns(seed: int) -> None:
    """Uniform over all 2**32 float32 bit patterns (NaNs, infs, subnormals included)."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 1 << 32, size=1 << 20, dtype=np.uint64).astype(np.uint32)
    check_exact(bits.view(np.float32))


def test_dense_sweep_of_fp16_range_bit_patterns() -> None:
    """Every float32 bit pattern with magnitude in the fp16 range, at a 2**9 bit stride."""
    start, stop = 0x33000000, 0x47800000 + (1 << 20)  # 2**-25 .. just past 65536
    bits = np.arange(start, stop, 1 << 9, dtype=np.uint32)
    bits = np.concatenate([bits, bits | np.uint32(0x80000000)])
    check_exact(bits.view(np.float32))


def test_round_keeps_shape_and_rejects_aliasing() -> None:
    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 3, 4)
    out = np.empty_like(x)
    work = np.empty(x.shape, np.uint32)
    assert round_fp16(x, out, work=work) is out
    assert np.array_equal(out, x.astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="alias"):
        round_fp16(x, x)
    with pytest.raises(TypeError, match="float32"):
        round_fp16(x.astype(np.float64))


def test_flush_to_zero() -> None:
    x = np.array([2.0**-24, -(2.0**-15), 2.0**-14, -(2.0**-14), 0.0, 1.0], np.float32)
    got = round_fp16(x, ftz=True)
    assert got.tolist() == [0.0, -0.0, 2.0**-14, -(2.0**-14), 0.0, 1.0]
    assert np.signbit(got[1])
    y = x.copy()
    assert flush_subnormals(y) is y and y[0] == 0


def test_bits_round_trip_all_fp16_patterns() -> None:
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    f = f16_bits_to_f32(h)
    ref = h.view(np.float16).astype(np.float32)
    nan = np.isnan(ref)
    assert np.array_equal(f.view(np.uint32)[~nan], ref.view(np.uint32)[~nan])
    assert np.isnan(f[nan]).all()
    assert np.array_equal(f32_to_f16_bits(f)[~nan], h[~nan])
    assert np.array_equal(f16_bits_to_f32(h.view(np.float16)), f, equal_nan=True)


def test_faster_than_numpy_astype_on_subnormals() -> None:
    """The point of the module: value-independent speed (NumPy is slow on subnormals)."""
    import time

    x = (np.random.default_rng(0).standard_normal(1 << 18) * 1e-6).astype(np.float32)
    out, work = np.empty_like(x), np.empty(x.shape, np.uint32)

    def best(fn) -> float:
        times = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    ours = best(lambda: round_fp16(x, out, work=work))
    numpys = best(lambda: x.astype(np.float16).astype(np.float32))
    assert ours < numpys
