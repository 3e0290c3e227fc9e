"""Fast, bit-exact fp16 rounding and fp16 <-> fp32 conversion in pure NumPy.

NumPy's ``astype(float16)`` is scalar C code (~10-100 ns per element, worst on subnormals). The
simulator rounds every op output, so it keeps fp16 *values* in float32 arrays and rounds them
with float arithmetic instead: adding ``s = 1.5 * 2**(e + 13)`` (``e`` the exponent of ``x``,
clamped to the fp16 normal range) makes the FPU drop exactly the bits fp16 does not have, with
round-to-nearest-even, and subtracting ``s`` again is exact. Clamping ``e`` at -14 gives the
fp16 subnormal grid (2**-24) for free; values rounding to >= 2**16 become inf by scaling by
2**112 (which overflows float32 exactly there) and back. Real fp16 bit patterns are produced
only at the surface boundary (:func:`f32_to_f16_bits`, :func:`f16_bits_to_f32`).
"""

from __future__ import annotations

import numpy as np

FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0**-14
FP16_MIN_SUBNORMAL = 2.0**-24

_EXP_MASK = np.uint32(0x7F800000)
_ABS_MASK = np.uint32(0x7FFFFFFF)
_SIGN = np.uint32(0x80000000)
_E_MIN = np.uint32(0x38800000)  # exponent field of 2**-14, the smallest fp16 normal
_E_MAX = np.uint32(0x47800000)  # exponent field of 2**16; anything that large overflows
_E_BIG = np.uint32(0x47000000)  # |x| >= 2**15: may round to 2**16, so check overflow
_MAGIC = np.uint32(0x06C00000)  # adds 13 to the exponent and sets the top mantissa bit (x1.5)
_SCALE_UP = np.float32(2.0**112)
_SCALE_DOWN = np.float32(2.0**-112)
_F32_HALF_BITS = np.uint32(0x3F000000)

_F16_TABLE: np.ndarray | None = None


def round_fp16(
    x: np.ndarray,
    out: np.ndarray | None = None,
    *,
    work: np.ndarray | None = None,
    ftz: bool = False,
) -> np.ndarray:
    """Round float32 ``x`` to the nearest fp16 value (ties to even), returned as float32.

    Bit-identical to ``x.astype(np.float16).astype(np.float32)`` for every non-NaN input
    (NaN stays NaN): overflow goes to +-inf, fp16 subnormals are kept unless ``ftz`` flushes
    them to signed zero. ``out`` must not alias ``x``; ``work`` is an optional uint32 scratch
    array of ``x``'s shape (both let hot loops avoid allocation).
    """
    if x.dtype != np.float32:
        raise TypeError(f"round_fp16 expects float32, got {x.dtype}")
    if out is None:
        out = np.empty_like(x)
    elif np.may_share_memory(out, x):
        raise ValueError("round_fp16: out must not alias x")
    if work is None:
        work = np.empty(x.shape, np.uint32)
    np.bitwise_and(x.view(np.uint32), _EXP_MASK, out=work)
    if x.size and work.max() >= _E_BIG:  # large, inf or NaN inputs: the rare slow path
        with np.errstate(over="ignore", invalid="ignore"):
            _round(x, out, work, big=True)
    else:
        _round(x, out, work, big=False)
    if ftz:
        flush_subnormals(out, work=work)
    return out


def _round(x: np.ndarray, out: np.ndarray, s: np.ndarray, *, big: bool) -> None:
    flat = s.reshape(-1)
    np.maximum(flat, _filled(_E_MIN, flat.size), out=flat)
    if big:
        np.minimum(flat, _filled(_E_MAX, flat.size), out=flat)
    np.add(s, _MAGIC, out=s)
    sf = s.view(np.float32)
    np.add(x, sf, out=out)
    np.subtract(out, sf, out=out)
    # restore the sign of results that rounded to zero (x - x is +0); np.copysign is slow
    ou = out.view(np.uint32)
    np.bitwise_and(x.view(np.uint32), _SIGN, out=s)
    np.bitwise_or(ou, s, out=ou)
    if big:  # anything that rounded to >= 2**16 overflows float32 here, exactly like fp16
        np.multiply(out, _SCALE_UP, out=out)
        np.multiply(out, _SCALE_DOWN, out=out)


_FILLED: dict[int, np.ndarray] = {}


def _filled(value: np.uint32, n: int) -> np.ndarray:
    """A cached uint32 array of ``n`` copies of ``value``: NumPy's max/min against a full
    array is vectorised, against a scalar it is ~5x slower."""
    arr = _FILLED.get(int(value))
    if arr is None or arr.size < n:
        arr = np.full(max(n, 1024), value, np.uint32)
        arr.flags.writeable = False
        _FILLED[int(value)] = arr
    return arr[:n]


def flush_subnormals(x: np.ndarray, *, work: np.ndarray | None = None) -> np.ndarray:
    """Replace fp16-subnormal magnitudes (0 < |x| < 2**-14) in float32 ``x`` by signed zero."""
    if work is None:
        work = np.empty(x.shape, np.uint32)
    bits = x.view(np.uint32)
    np.bitwise_and(bits, _ABS_MASK, out=work)
    tiny = work < _E_MIN
    if tiny.any():
        np.bitwise_and(bits, _SIGN, out=bits, where=tiny)
    return x


def f16_bits_to_f32(bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Decode uint16 fp16 bit patterns (or a float16 array) to float32 by table lookup."""
    global _F16_TABLE
    if _F16_TABLE is None:
        _F16_TABLE = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
        _F16_TABLE = _F16_TABLE.view(np.float16).astype(np.float32)
    idx = bits.view(np.uint16) if bits.dtype != np.uint16 else bits
    if out is None:
        out = np.empty(idx.shape, np.float32)
    np.take(_F16_TABLE, idx, out=out)
    return out


def f32_to_f16_bits(
    x: np.ndarray, out: np.ndarray | None = None, *, ftz: bool = False
) -> np.ndarray:
    """Encode float32 ``x`` as fp16 bit patterns (uint16), rounding to nearest even.

    Same bits as ``x.astype(np.float16).view(np.uint16)`` for every input, NaN payloads
    included (NumPy truncates the payload and keeps it non-zero).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    r = round_fp16(x, ftz=ftz)
    u = r.view(np.uint32)
    a = u & _ABS_MASK
    # normal fp16 (and inf): re-bias the exponent from 127 to 15 and drop 13 mantissa bits
    h = a - np.uint32(112 << 23)
    h >>= np.uint32(13)
    # subnormal fp16 or zero: r = k * 2**-24, and (|r| + 0.5) has k in its low mantissa bits
    sub = a < _E_MIN
    if sub.any():
        k = (np.abs(r[sub]) + np.float32(0.5)).view(np.uint32) - _F32_HALF_BITS
        h[sub] = k
    special = a >= _EXP_MASK
    if special.any():
        xa = x.view(np.uint32)[special] & _ABS_MASK
        payload = np.where(xa > _EXP_MASK, (xa & np.uint32(0x7FFFFF)) >> np.uint32(13), 0)
        payload[(xa > _EXP_MASK) & (payload == 0)] = 1
        h[special] = np.uint32(0x7C00) | payload
    h |= (u >> np.uint32(16)) & np.uint32(0x8000)
    if out is None:
        out = np.empty(x.shape, np.uint16)
    np.copyto(out, h, casting="unsafe")
    return out
