"""Compile-time planning state: value buffers, shared scratch, and the list of eval steps.

Every MIL value gets a preallocated array (float32 for fp16 and fp32 tensors, native NumPy types
otherwise) or a view of one, so evaluation is a flat list of closures that write into fixed
buffers: no parsing, lookups or allocation at eval time. :meth:`PlanContext.emit` applies the
fp16 storage rule (round every fp16 op output) and folds ops whose inputs are all constant.
With a :class:`~anetrain.runtime.sim.fast.FastOps` the rounding is a numba pass in place, and
planners may hand over steps that compute and round in the same pass (``fused``).

An op output feeding a concat along a leading axis is allocated as its slice of the concat's
buffer (:meth:`PlanContext.alias_into`), so the producer writes there and the concat copies
nothing. Transient buffers (the inputs, values that die within an eval, scratch) come from the
plan's :class:`~anetrain.runtime.sim.buffers.Arena`, memory its backend's other kernels share.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from anetrain.hardware.chips import ChipProfile
from anetrain.mil.ir import Arg, Literal, Operation, Var
from anetrain.mil.ops import Args
from anetrain.mil.types import FP16, FP32, DType
from anetrain.runtime.errors import UnsupportedOpError
from anetrain.runtime.fp16 import round_fp16
from anetrain.runtime.sim.buffers import Arena, BufferPool
from anetrain.runtime.sim.fast import FastOps

Step = Callable[[], None]
Compute = Callable[[np.ndarray], None]


def storage_dtype(dtype: DType) -> np.dtype:
    """fp16 values live in float32 arrays (rounded to fp16 after every op)."""
    return np.dtype(np.float32) if dtype in (FP16, FP32) else dtype.numpy


def literal_array(lit: Literal) -> np.ndarray | str:
    data = lit.value
    if isinstance(data, str):
        return data
    assert data is not None, "BLOBFILE literals are resolved by the weight loader"
    return np.asarray(data, dtype=storage_dtype(lit.type.dtype))


class PlanContext:
    """Buffers and steps of one kernel being planned."""

    def __init__(
        self,
        chip: ChipProfile,
        *,
        flush_subnormals: bool,
        fast: FastOps | None = None,
        arena: Arena | None = None,
    ) -> None:
        self.chip = chip
        self.arena = arena if arena is not None else Arena(None)  # the transient buffers
        self.ftz = flush_subnormals
        self.fast = fast
        self.values: dict[str, np.ndarray] = {}
        self.const: set[str] = set()
        self.owned: set[str] = set()  # values held in buffers that steps write
        self.prefilled: set[str] = set()  # concat outputs holding constants written now
        self.steps: list[Step] = []
        self._scratch: dict[tuple[str, np.dtype], np.ndarray] = {}
        self._slots: dict[str, tuple[Var, tuple[slice, ...]]] = {}
        self._buffers: dict[str, np.ndarray] = {}
        self._targets: set[str] = set()  # concat outputs that others are computed into
        self.pool: BufferPool | None = None  # buffer reuse, set up by build_plan

    def slots(self) -> dict[str, Var]:
        """Value name -> the concat output whose buffer it is computed in."""
        return {name: target for name, (target, _) in self._slots.items()}

    def _pin(self, var: Var) -> None:
        """Keep ``var``'s buffer (and the concat buffer it sits in) from reuse."""
        if self.pool is not None:
            self.pool.pin(var.name)
        slot = self._slots.get(var.name)
        if slot is not None:
            self.prefilled.add(slot[0].name)
            self._pin(slot[0])

    # ---- reading arguments ----------------------------------------------------------------

    def value(self, arg: Arg) -> np.ndarray:
        """Run-time array of a single argument (a buffer, a view, or a constant)."""
        if isinstance(arg, Var):
            return self.values[arg.name]
        if isinstance(arg, Literal):
            data = literal_array(arg)
            if isinstance(data, str):
                raise UnsupportedOpError(f"string value {data!r} used as a tensor")
            return data
        raise TypeError(f"expected a single value, got {arg!r}")

    def values_of(self, arg: Arg) -> list[np.ndarray]:
        items = arg if isinstance(arg, tuple) else (arg,)
        return [self.value(a) for a in items]

    def is_const(self, arg: Arg | None) -> bool:
        if arg is None or isinstance(arg, Literal):
            return True
        if isinstance(arg, tuple):
            return all(self.is_const(a) for a in arg)
        return arg.name in self.const

    def args(self, op: Operation) -> Args:
        """The registry's typed argument view (for const parameters and shape helpers)."""
        merged: dict[str, Arg] = dict(op.inputs)
        merged.update({k: v for k, v in op.attributes.items() if k != "name"})
        return Args(op.op_type, merged)

    # ---- buffers --------------------------------------------------------------------------

    def alloc(self, var: Var, *, reuse: bool = True) -> np.ndarray:
        """The C-contiguous buffer a step writes ``var`` into: its own, or its slice of a
        concat's buffer (:meth:`alias_into`). ``reuse=False``: never a pooled buffer (a value
        computed now, at compile time, which a dead value's step must not overwrite later)."""
        buf = self._buffers.get(var.name)
        if buf is None:
            slot = self._slots.get(var.name)
            reuse = reuse and var.name not in self._targets  # a target may hold constants
            if slot is None and self.pool is not None and reuse:
                buf = self.pool.take(var.name, var.shape, storage_dtype(var.dtype))
            elif slot is None:
                buf = np.zeros(var.shape, storage_dtype(var.dtype))
            else:
                target, index = slot
                buf = view_reshape(self.alloc(target)[index], var.shape)
                assert buf is not None and buf.flags.c_contiguous, "alias slots are contiguous"
            self._buffers[var.name] = buf
        self.values[var.name] = buf
        self.owned.add(var.name)
        return buf

    def bind_input(self, var: Var) -> np.ndarray:
        """The buffer function input ``var`` is copied into at each eval (transient: only
        the eval's steps read it); not owned, since the caller writes it."""
        buf = self.arena.take(max(math.prod(var.shape), 1), storage_dtype(var.dtype))
        buf = buf[: math.prod(var.shape)].reshape(var.shape)
        self._buffers[var.name] = buf
        self.values[var.name] = buf
        return buf

    def alias_into(self, var: Var, target: Var, index: tuple[slice, ...]) -> None:
        """Allocate ``var`` (not yet planned) as ``target[index]`` (a C-contiguous slice of
        ``var``'s size), reshaped to ``var``'s shape."""
        self._slots[var.name] = (target, index)
        self._targets.add(target.name)

    def has_slot(self, var: Var) -> bool:
        return var.name in self._slots

    def slot_of(self, var: Var) -> tuple[Var, tuple[slice, ...]] | None:
        return self._slots.get(var.name)

    def in_buffer_of(self, var: Var, target: Var) -> bool:
        """Whether ``var``'s value already sits in its slot of ``target``'s buffer (its
        producer, or the producer of the array it is a view of, wrote it there)."""
        slot = self._slots.get(var.name)
        buf = self._buffers.get(target.name)
        value = self.values.get(var.name)
        if slot is None or slot[0].name != target.name or buf is None or value is None:
            return False
        expected = buf[slot[1]]
        return (
            value.flags.c_contiguous
            and value.size == expected.size
            and value.ctypes.data == expected.ctypes.data
        )

    def fast_for(self, op: Operation) -> FastOps | None:
        """The fast-path kernels when ``op`` has an fp16 output on the fast path."""
        return self.fast if self.fast is not None and op.outputs[0].dtype is FP16 else None

    def scratch(self, slot: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        """A contiguous array of ``shape`` shared by all ops (valid only within one step; a
        transient buffer, see :mod:`anetrain.runtime.sim.buffers`)."""
        dt = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64))
        key = (slot, dt)
        buf = self._scratch.get(key)
        if buf is None or buf.size < n:
            buf = self.arena.take(max(n, 1), dt)
            self._scratch[key] = buf
        return buf[:n].reshape(shape)

    # ---- emitting -------------------------------------------------------------------------

    def define(self, var: Var, array: np.ndarray, *, const: bool) -> None:
        """Bind ``var`` to an existing array or view (shape ops, constants)."""
        self.values[var.name] = array
        if const:
            self.const.add(var.name)

    def emit(self, op: Operation, compute: Compute, *, exact: bool = False) -> np.ndarray:
        """Add a step computing ``op``'s output, rounded to fp16 if declared fp16.

        ``compute(out)`` writes the unrounded result into ``out`` (never aliasing its inputs).
        ``exact`` skips rounding for ops whose results are already representable (max,
        copies). If every input is constant the step runs once now and is not kept.
        """
        return self.emit_bound(op, lambda dst: lambda: compute(dst), exact=exact)

    def emit_bound(
        self,
        op: Operation,
        bind: Callable[[np.ndarray], Step],
        *,
        exact: bool = False,
        fused: bool = False,
    ) -> np.ndarray:
        """Like :meth:`emit`, but ``bind(dst)`` returns the step, so it can precompute views
        of its fixed destination once instead of on every eval. ``fused``: the step already
        writes the rounded fp16 result (a fast-path kernel that rounds in the same pass)."""
        var = op.outputs[0]
        folded = all(self.is_const(a) for a in op.inputs.values())
        out = self.alloc(var, reuse=not folded)
        if var.dtype is FP16 and not (exact or fused):
            if self.fast is not None:  # compute into out, then one rounding pass in place
                inner, rounder = bind(out), self.fast.rounder(out)

                def step() -> None:
                    inner()
                    rounder()

            else:
                raw = self.scratch("raw", var.shape)
                work = self.scratch("work", var.shape, np.uint32)
                inner = bind(raw)
                ftz = self.ftz

                def step() -> None:
                    inner()
                    round_fp16(raw, out, work=work, ftz=ftz)

        else:
            step = bind(out)
        if folded:
            with np.errstate(all="ignore"):
                step()
            out.flags.writeable = False
            self.const.add(var.name)
            self.owned.discard(var.name)
            self._pin(var)
        else:
            self.steps.append(step)
        return out

    def contiguous(self, arr: np.ndarray, *, const: bool) -> np.ndarray:
        """``arr`` itself if C-contiguous, else a buffer refreshed by a copy step each eval."""
        if arr.flags.c_contiguous:
            return arr
        if const:
            return np.ascontiguousarray(arr)
        buf = self.arena.take(arr.size, arr.dtype).reshape(arr.shape)
        self.steps.append(lambda: np.copyto(buf, arr))
        return buf


def view_reshape(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """A reshaped *view* of ``arr``, or None when NumPy would have to copy."""
    out = arr.reshape(shape)
    return out if (out.size == 0 or np.may_share_memory(out, arr)) else None
