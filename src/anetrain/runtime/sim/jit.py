"""numba kernels of the simulator's fast path: each op's arithmetic and its fp16 rounding in one
pass over memory (the ``fast`` extra; imported only through :mod:`anetrain.runtime.sim.fast`).

Only IEEE-exact float32 operations are compiled here (+, -, *, /, sqrt and the rounding's bit
manipulation; no fastmath, so LLVM neither reassociates nor contracts into FMAs): they give the
same bits as NumPy's ufuncs, which is what keeps this path bit-identical to the NumPy one.
Transcendentals (exp, tanh, log, pow) and reductions (whose summation order NumPy fixes) stay
NumPy calls; the kernels then finish and round their results in place.

The rounding is the float trick of :func:`anetrain.runtime.fp16.round_fp16` applied per element:
add and subtract ``1.5 * 2**(e + 13)`` (``e`` the exponent clamped to the fp16 range), restore
the sign of zeros, send results >= 2**16 to infinity, and optionally flush fp16 subnormals.
"""

from __future__ import annotations

import numba
import numpy as np

_OPTS = {"nogil": True, "cache": True, "error_model": "numpy"}  # x/0 is inf, not an error

_EXP = np.uint32(0x7F800000)
_ABS = np.uint32(0x7FFFFFFF)
_SIGN = np.uint32(0x80000000)
_E_MIN = np.uint32(0x38800000)  # exponent field of 2**-14, the smallest fp16 normal
_E_MAX = np.uint32(0x47800000)  # exponent field of 2**16
_MAGIC = np.uint32(0x06C00000)  # + 13 in the exponent, top mantissa bit set (x 1.5)
_OVERFLOW = np.float32(65536.0)  # anything that rounded this far is beyond fp16's 65504
_INF = np.float32(np.inf)


@numba.njit(inline="always", error_model="numpy")
def r16(x: float, ftz: bool) -> float:
    """float32 ``x`` rounded to the nearest fp16 value (ties to even), as float32."""
    bits = np.float32(x).view(np.uint32)
    e = max(bits & _EXP, _E_MIN)
    e = min(e, _E_MAX)
    s = np.uint32(e + _MAGIC).view(np.float32)
    r = (x + s) - s
    sign = np.uint32(bits & _SIGN)
    rb = np.uint32(np.float32(r).view(np.uint32) | sign)
    if ftz and (rb & _ABS) < _E_MIN:
        rb = sign
    r = np.uint32(rb).view(np.float32)
    if abs(r) >= _OVERFLOW:
        r = _INF if r > 0 else -_INF
    return r


@numba.njit(**_OPTS)
def round_inplace(a: np.ndarray, ftz: bool) -> None:
    """``a = round(a)`` over a 1-D contiguous float32 array (one array: LLVM vectorises it
    without the aliasing checks a separate output would need)."""
    for i in range(a.size):
        a[i] = r16(a[i], ftz)


ADD, SUB, MUL, DIV = 0, 1, 2, 3
BINARY = {"add": ADD, "sub": SUB, "mul": MUL, "div": DIV}  # op type -> ``kind`` code


@numba.njit(inline="always", error_model="numpy")
def _op(kind: int, a: float, b: float) -> float:
    if kind == ADD:
        return a + b
    if kind == SUB:
        return a - b
    if kind == MUL:
        return a * b
    return a / b


@numba.njit(**_OPTS)
def binary_into(x: np.ndarray, y: np.ndarray, out: np.ndarray, kind: int, ftz: bool) -> None:
    """``out = round(x <kind> y)`` over 2-D C-contiguous float32 ``[outer, inner]`` arrays;
    ``x`` and ``y`` may each be broadcast along either axis (extent 1). One function for the
    four ops, with the op a loop-invariant argument (LLVM unswitches the loops): a closure
    per op is not cacheable (numba hashes the closure's cells, which differ per process, so
    each process compiled them again and grew the cache index)."""
    n_outer, n_inner = out.shape
    x_row, x_col = x.shape[0] == 1, x.shape[1] == 1
    y_row, y_col = y.shape[0] == 1, y.shape[1] == 1
    for o in range(n_outer):
        xo = x[0] if x_row else x[o]
        yo = y[0] if y_row else y[o]
        oo = out[o]
        if x_col and y_col:
            v = r16(_op(kind, xo[0], yo[0]), ftz)
            for i in range(n_inner):
                oo[i] = v
        elif x_col:
            xv = xo[0]
            for i in range(n_inner):
                oo[i] = r16(_op(kind, xv, yo[i]), ftz)
        elif y_col:
            yv = yo[0]
            for i in range(n_inner):
                oo[i] = r16(_op(kind, xo[i], yv), ftz)
        else:
            for i in range(n_inner):
                oo[i] = r16(_op(kind, xo[i], yo[i]), ftz)


@numba.njit(**_OPTS)
def sqrt_into(x: np.ndarray, out: np.ndarray, ftz: bool) -> None:
    for i in range(x.size):
        out[i] = r16(np.sqrt(x[i]), ftz)


@numba.njit(**_OPTS)
def rsqrt_into(x: np.ndarray, eps: float, out: np.ndarray, ftz: bool) -> None:
    """``round(1 / sqrt(x + eps))``, each step in float32 like NumPy's add, sqrt, reciprocal."""
    e = np.float32(eps)
    one = np.float32(1.0)
    for i in range(x.size):
        out[i] = r16(one / np.sqrt(x[i] + e), ftz)


@numba.njit(**_OPTS)
def sigmoid_finish(t: np.ndarray, ftz: bool) -> None:
    """``t = round(1 / (t + 1))`` where ``t`` holds ``exp(-x)`` (computed by NumPy)."""
    one = np.float32(1.0)
    for i in range(t.size):
        t[i] = r16(one / (t[i] + one), ftz)


@numba.njit(**_OPTS)
def silu_finish(x: np.ndarray, t: np.ndarray, ftz: bool) -> None:
    """``t = round(x / (t + 1))`` where ``t`` holds ``exp(-x)`` (computed by NumPy); silu(-inf)
    is its limit -0.0, not -inf / inf = NaN."""
    one = np.float32(1.0)
    for i in range(t.size):
        t[i] = np.float32(-0.0) if x[i] == -np.inf else r16(x[i] / (t[i] + one), ftz)


@numba.njit(**_OPTS)
def round_block(src: np.ndarray, dst: np.ndarray, row0: int, col0: int, transposed: bool) -> None:
    """``dst[row0 + i, col0 + j] = round(S[i, j])`` for C-contiguous 2-D ``src`` and ``dst``,
    where ``S`` is ``src`` or, if ``transposed``, ``src.T``: a surface write of a block (a
    weight matrix lands transposed in the forward kernels' surfaces)."""
    if not transposed:
        rows, cols = src.shape
        for i in range(rows):
            s, d = src[i], dst[row0 + i][col0 : col0 + cols]
            for j in range(cols):
                d[j] = r16(s[j], False)
        return
    cols, rows = src.shape  # S = src.T is [rows, cols]
    tile = 32  # a tile of src rows and dst rows stays in L1 while it is transposed
    for i0 in range(0, rows, tile):
        i1 = min(i0 + tile, rows)
        for j in range(cols):
            s = src[j][i0:i1]
            for k in range(i1 - i0):
                dst[row0 + i0 + k, col0 + j] = r16(s[k], False)
