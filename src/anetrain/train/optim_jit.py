"""numba AdamW: gradient scaling (clipping), decoupled weight decay and the Adam update in one
pass over the flat buffers (the ``fast`` extra; :class:`anetrain.train.optim.AdamW` picks it).

The arithmetic is the NumPy path's, operation for operation in float32 (no fastmath, so no
FMA contraction or reassociation), so both give the same bits.
"""

from __future__ import annotations

import numba
import numpy as np

_BLOCK = 2048


@numba.njit(nogil=True, cache=True, error_model="numpy")
def adamw_segments(
    w: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    decay: np.ndarray,
    consts: np.ndarray,
) -> None:
    """Update ``w``, ``m``, ``v`` over the segments ``[starts[k], ends[k])``; ``decay[k]``:
    whether weight decay applies there. ``consts`` (float32): grad scale, decay keep factor,
    b1, 1-b1, b2, 1-b2, 1/sqrt(bc2), eps, lr/bc1."""
    gs, keep, b1, one_b1, b2, one_b2, inv_bc2, eps, step = (
        consts[0], consts[1], consts[2], consts[3], consts[4], consts[5], consts[6], consts[7],
        consts[8],
    )  # fmt: skip
    for k in range(starts.size):
        a, b, dk = starts[k], ends[k], decay[k]
        # in blocks, with the moments and the weights in separate loops: few enough arrays
        # per loop for LLVM's aliasing checks, so both vectorise; the block stays in L1
        for lo in range(a, b, _BLOCK):
            hi = min(lo + _BLOCK, b)
            # slices, so indices start at 0: LLVM drops the negative-index wraparound branch
            gb, mb, vb, wb = g[lo:hi], m[lo:hi], v[lo:hi], w[lo:hi]
            for i in range(hi - lo):
                gi = gb[i] * gs
                mb[i] = mb[i] * b1 + gi * one_b1
                vb[i] = vb[i] * b2 + (gi * gi) * one_b2
            if dk:
                for i in range(hi - lo):
                    wb[i] = wb[i] * keep - (mb[i] / (np.sqrt(vb[i]) * inv_bc2 + eps)) * step
            else:
                for i in range(hi - lo):
                    wb[i] = wb[i] - (mb[i] / (np.sqrt(vb[i]) * inv_bc2 + eps)) * step
