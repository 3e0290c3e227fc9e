"""Every deliberate difference between the simulator and coremltools, with the reason.

The differential test accepts a disagreement only if one entry here explains it: the side that
differs (``ours_rejects``, ``theirs_rejects``, ``values``, or ``coremltools_contradiction`` when
coremltools' own type and value inference disagree), the ops it concerns, and a pattern on the
error message or a predicate on the case. docs/runtime.md lists the same entries (a test checks
that each key appears there), so the allow-list and its documentation cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from anetrain.runtime.opcheck.cases import Case


@dataclass(frozen=True)
class Difference:
    key: str
    side: str
    ops: frozenset[str]
    why: str
    message: str | None = None  # regex on the rejecting side's error message
    applies: Callable[[Case], bool] | None = None

    def matches(self, side: str, case: Case, message: str) -> bool:
        if side != self.side or case.op not in self.ops:
            return False
        if self.message is not None and not re.search(self.message, message):
            return False
        return self.applies is None or self.applies(case)


def _floats_out_of_range(case: Case) -> bool:
    """cast of a float that is NaN or outside the target integer range (undefined in NumPy)."""
    x = np.asarray(case.kwargs["x"])
    target = case.kwargs["dtype"]
    if x.dtype.kind != "f" or target not in ("int8", "uint8", "int32"):
        return False
    info = np.iinfo(np.dtype(target if target != "int32" else np.int32))
    with np.errstate(invalid="ignore"):
        return bool(np.any(~np.isfinite(x)) or np.any(np.trunc(x) < info.min)) or bool(
            np.any(np.trunc(x) > info.max)
        )


def _int_cast_wraps(case: Case) -> bool:
    """cast of an integer outside the narrower target's range (NumPy wraps, we saturate)."""
    x = np.asarray(case.kwargs["x"])
    target = case.kwargs["dtype"]
    if x.dtype.kind not in "iu" or target not in ("int8", "uint8", "int32"):
        return False
    info = np.iinfo(np.dtype(target))
    return bool(np.any(x < info.min) or np.any(x > info.max))


def _negative_stride_end_before_start(case: Case) -> bool:
    """slice_by_index with a negative stride whose end lies before -dim (runs to the start)."""
    x = np.asarray(case.kwargs["x"])
    stride = case.kwargs.get("stride")
    if stride is None:
        return False
    end_mask = case.kwargs.get("end_mask", np.zeros(x.ndim, bool))
    return any(
        s < 0 and not m and e < -d
        for s, e, m, d in zip(stride, case.kwargs["end"], end_mask, x.shape, strict=True)
    )


DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "coremltools-negative-stride-clamp",
        "values",
        frozenset({"slice_by_index"}),
        "with a negative stride and end < -dim, coremltools clamps end to 0 (its type inference "
        "also writes the clamped value into the end constant, so its value inference sees it "
        "too) and drops element 0; NumPy slicing, which the op documentation states, runs to "
        "the start of the axis, and so do we",
        applies=_negative_stride_end_before_start,
    ),
    Difference(
        "slice-out-of-bounds",
        "ours_rejects",
        frozenset({"slice_by_size", "slice_by_index"}),
        "a slice_by_size past the end of an axis, or a squeezed slice_by_index index outside "
        "the axis, is rejected: coremltools' type inference keeps the requested size (or drops "
        "the axis) while its value inference clips (or returns an empty array), so the two "
        "disagree and the hardware would read outside the tensor",
        message=r"out of bounds",
    ),
    Difference(
        "empty-slice",
        "ours_rejects",
        frozenset({"slice_by_size", "slice_by_index"}),
        "a slice that selects nothing is rejected: the ANE has no zero-size tensors; "
        "coremltools' type inference rejects some empty slices (begin > end with a positive "
        "stride), gives a size of 1 for others where its value inference gives 0, and its "
        "slice_by_size value inference treats size 0 like -1 (to the end)",
        message=r"selects nothing",
    ),
    Difference(
        "coremltools-squeeze-all-fp16",
        "theirs_rejects",
        frozenset({"slice_by_index"}),
        "coremltools' value inference of a slice_by_index that squeezes every axis converts "
        "the scalar only for int32/fp32 and raises 'Unable to convert type' for fp16 and bool; "
        "the call is valid (its type inference accepts it) and we return the element",
        message=r"Unable to convert type",
    ),
    Difference(
        "coremltools-rank0-bool-crash",
        "theirs_rejects",
        frozenset({"reshape", "transpose", "slice_by_size", "slice_by_index"}),
        "coremltools stores a rank-0 bool constant as a Python bool and its value inference "
        "then fails (AttributeError: 'bool' object has no attribute ...); the call itself is "
        "valid and we run it",
        message=r"AttributeError: 'bool' object",
    ),
    Difference(
        "matmul-rank1",
        "ours_rejects",
        frozenset({"matmul"}),
        "rank-1 operands are rejected: coremltools promotes them like NumPy (and drops the "
        "added axis again) but its type inference gets some of them wrong (a rank-1 x with a "
        "batched y gives [1, n] instead of [b, n]; a rank-1 y can raise IndexError), the ANE "
        "layouts are rank 4, and a silent promotion hides a layout bug; reshape to [1, n] or "
        "[n, 1]",
        message=r"rank >= 2",
    ),
    Difference(
        "cast-saturates",
        "values",
        frozenset({"cast"}),
        "float to integer casts truncate toward zero and saturate, NaN becomes 0; coremltools "
        "uses NumPy's astype, whose result is undefined (platform-dependent wrap-around) for "
        "NaN and out-of-range values",
        applies=_floats_out_of_range,
    ),
    Difference(
        "cast-int-saturates",
        "values",
        frozenset({"cast"}),
        "integer to narrower integer casts saturate (int32 300 to int8 is 127); coremltools' "
        "astype wraps (300 becomes 44)",
        applies=_int_cast_wraps,
    ),
    Difference(
        "static-shapes",
        "ours_rejects",
        frozenset({"reshape", "slice_by_size", "slice_by_index"}),
        "arguments that decide the output shape (reshape's shape, the slices' begin, end and "
        "size) must be constants: ANE programs are compiled for static shapes, and our types "
        "have no symbolic dimensions; coremltools accepts run-time values and infers symbolic "
        "shapes",
        message=r"must be a constant",
    ),
    Difference(
        "slice-negative-begin-size-minus-one",
        "ours_rejects",
        frozenset({"slice_by_size"}),
        "a negative begin with size -1 is ambiguous: coremltools' type inference computes "
        "dim - begin (larger than the axis) while its value inference slices to the end",
        message=r"ambiguous",
    ),
    Difference(
        "epsilon-scalar",
        "ours_rejects",
        frozenset({"log", "rsqrt"}),
        "epsilon must be a scalar, as the op documentation says (const T); coremltools does "
        "not check the rank and broadcasts a tensor epsilon",
        message=r"epsilon.*scalar",
    ),
)


def explain(side: str, case: Case, message: str) -> Difference | None:
    """The documented difference that accounts for this disagreement, if any."""
    return next((d for d in DIFFERENCES if d.matches(side, case, message)), None)


def by_key() -> dict[str, Difference]:
    return {d.key: d for d in DIFFERENCES}


__all__ = ["DIFFERENCES", "Difference", "by_key", "explain"]
