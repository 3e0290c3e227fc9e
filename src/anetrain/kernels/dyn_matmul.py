"""The dynamic-weight matmul: weights travel in the input's spatial tail, so they change
without a recompile (maderix/ANE's dynamic matmul, token for token).

Input ``[1, IC, 1, S + OC]``: channel row ``c`` holds ``act[c, 0:S]`` then ``W[c, 0:OC]``
(the ``[IC, OC]`` block). Output ``[1, OC, 1, S]`` with ``y[o, t] = sum_c act[c, t] * W[c, o]``.
"""

from __future__ import annotations

from anetrain.mil import FP16, Builder, Program, Var
from anetrain.mil.types import BOOL, INT32


def add_dyn_matmul(
    b: Builder,
    x: Var,
    ic: int,
    oc: int,
    seq: int,
    prefix: str,
    col: int = 0,
    false: Var | None = None,
) -> Var:
    """Append a dynamic matmul reading act at spatial ``col`` and weights right after it."""
    ba = b.const([0, 0, 0, col], name=f"{prefix}_ba", dtype=INT32)
    sa = b.const([1, ic, 1, seq], name=f"{prefix}_sa", dtype=INT32)
    act = b.slice_by_size(x, ba, sa, name=f"{prefix}_act")
    bw = b.const([0, 0, 0, col + seq], name=f"{prefix}_bw", dtype=INT32)
    sw = b.const([1, ic, 1, oc], name=f"{prefix}_sw", dtype=INT32)
    wt = b.slice_by_size(x, bw, sw, name=f"{prefix}_wt")
    ra = b.const([1, 1, ic, seq], name=f"{prefix}_ra", dtype=INT32)
    a2 = b.reshape(act, ra, name=f"{prefix}_a2")
    pm = b.const([0, 1, 3, 2], name=f"{prefix}_pm", dtype=INT32)
    a3 = b.transpose(a2, pm, name=f"{prefix}_a3")
    rw = b.const([1, 1, ic, oc], name=f"{prefix}_rw", dtype=INT32)
    w = b.reshape(wt, rw, name=f"{prefix}_W")
    if false is None:
        false = b.const(False, name="bF", dtype=BOOL)
    yh = b.matmul(a3, w, false, false, name=f"{prefix}_yh")
    yt = b.transpose(yh, pm, name=f"{prefix}_yt")
    ro = b.const([1, oc, 1, seq], name=f"{prefix}_ro", dtype=INT32)
    return b.reshape(yt, ro, name=f"{prefix}_y")


def dyn_matmul_program(
    ic: int, oc: int, seq: int, prefix: str = "mm", target: str = "ios18"
) -> Program:
    b = Builder(target)
    x = b.input("x", FP16, [1, ic, 1, seq + oc])
    b.returns(add_dyn_matmul(b, x, ic, oc, seq, prefix))
    return b.program()
