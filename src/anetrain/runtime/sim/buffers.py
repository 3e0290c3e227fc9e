"""Buffer reuse across a plan: an op output's buffer goes back to a pool once every op reading
the value (or a view of it) has run, and later outputs take pooled buffers that fit.

Lifetimes come from the IR before planning, conservatively: the outputs of the data-movement
ops (reshape, transpose, slices) count as views of their input, a value computed into a
concat's buffer lives as long as the concat's output, and function inputs and outputs and
constant-folded values are never reused.

Buffers whose values die within an eval (and the planners' scratch) are *transient*: with a
:class:`Workspace` they are laid out in one block of memory shared by every plan of a backend,
whose kernels are evaluated one at a time, so the resident memory is the largest plan's working
set instead of the sum over kernels.
"""

from __future__ import annotations

import math
import mmap
import threading
from collections.abc import Iterable

import numpy as np

from anetrain.mil.ir import Function, Var

VIEW_OPS = frozenset({"reshape", "transpose", "slice_by_size", "slice_by_index"})
FOREVER = math.inf


def _vars(arg: object) -> Iterable[Var]:
    items = arg if isinstance(arg, tuple) else (arg,)
    return (a for a in items if isinstance(a, Var))


class Workspace:
    """One block of memory for the transient buffers of every plan of a backend.

    Kernels of one backend run one at a time (``lock``, held while a plan is built and while
    one is evaluated), so the contents of a transient buffer are dead whenever another kernel
    runs: each plan lays its transient buffers out from the start of the same block
    (:meth:`arena`). The block is reserved address space (an anonymous private mapping) that
    takes physical pages only as plans touch them, so the resident size is that of the
    largest plan's working set. Where no such mapping can be made, or a plan outgrows the
    block, buffers are the plan's own (correct, only not shared).
    """

    RESERVE = 1 << 30  # address space, not memory: pages are backed only once touched
    ALIGN = 64

    def __init__(self, reserve: int = RESERVE) -> None:
        self.lock = threading.RLock()
        self._reserve = reserve
        self._block: np.ndarray | None = None
        self._mapped = False

    def block(self) -> np.ndarray | None:
        """The shared block (uint8), mapped on first use; None where mapping failed."""
        if not self._mapped:
            self._mapped = True
            flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
            flags |= getattr(mmap, "MAP_NORESERVE", 0)
            try:
                self._block = np.frombuffer(mmap.mmap(-1, self._reserve, flags=flags), np.uint8)
            except (OSError, ValueError, TypeError, OverflowError):
                self._block = None
        return self._block

    def arena(self) -> Arena:
        return Arena(self)


class Arena:
    """One plan's transient buffers, laid out one after another from the start of its
    workspace's block (or the plan's own arrays, without a workspace or past its end)."""

    def __init__(self, workspace: Workspace | None) -> None:
        self._workspace = workspace
        self._offset = 0
        self.buffers: list[np.ndarray] = []  # every buffer handed out

    def take(self, n: int, dtype: np.dtype) -> np.ndarray:
        """A flat array of ``n`` elements of ``dtype`` whose contents may be garbage at the
        start of every eval (write before reading, within the eval)."""
        dt = np.dtype(dtype)
        block = self._workspace.block() if self._workspace is not None else None
        align = Workspace.ALIGN
        start = -(-self._offset // align) * align
        end = start + n * dt.itemsize
        if block is not None and end <= block.size:
            self._offset = end
            flat = block[start:end].view(dt)
        else:
            flat = np.zeros(n, dt)
        self.buffers.append(flat)
        return flat


class BufferPool:
    """Hands out C-contiguous buffers for op outputs, reusing the dead ones."""

    def __init__(self, fn: Function, slots: dict[str, Var], arena: Arena) -> None:
        """``slots``: value name -> the concat output whose buffer it is computed in;
        ``arena``: where the buffers of values that die within an eval come from (values
        kept for good, function inputs and outputs, get their own)."""
        roots: dict[str, set[str]] = {}

        def roots_of(name: str) -> set[str]:
            return roots.get(name, {name})

        last: dict[str, float] = {}
        for index, op in enumerate(fn.operations):
            for out in op.outputs:
                own = {out.name}
                if out.name in slots:
                    own = roots_of(slots[out.name].name) | own
                if op.op_type in VIEW_OPS:
                    for x in _vars(op.inputs.get("x")):
                        own = own | roots_of(x.name)
                roots[out.name] = own
                for root in own:
                    last[root] = max(last.get(root, -1), index)
            for arg in op.inputs.values():
                for v in _vars(arg):
                    for root in roots_of(v.name):
                        last[root] = max(last.get(root, -1), index)
        for v in (*fn.inputs, *fn.outputs):
            for root in roots_of(v.name):
                last[root] = FOREVER
        self._last = last
        self._live: dict[str, tuple[float, np.ndarray]] = {}  # name -> (last use, flat buffer)
        self._free: list[np.ndarray] = []
        self._arena = arena
        self._transient: set[int] = set()  # ids of the arena's buffers
        self.now = -1  # index of the op being planned

    def take(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A buffer for value ``name``: a dead one that fits (best fit), else a new one."""
        for key, (last, flat) in list(self._live.items()):
            if last < self.now:
                del self._live[key]
                self._free.append(flat)
        n = max(math.prod(shape), 1)
        last = self._last.get(name, self.now)
        kept = last == FOREVER  # its own buffer: the free ones are all transient
        fits = (
            []
            if kept
            else [i for i, b in enumerate(self._free) if b.dtype == dtype and b.size >= n]
        )
        if fits:
            flat = self._free.pop(min(fits, key=lambda i: self._free[i].size))
        elif kept:
            flat = np.zeros(n, dtype)
        else:
            flat = self._arena.take(n, dtype)
            self._transient.add(id(flat))
        self._live[name] = (last, flat)
        return flat[: math.prod(shape)].reshape(shape)

    def pin(self, name: str) -> None:
        """Keep ``name``'s buffer for good (a constant-folded value)."""
        if name in self._live:
            flat = self._live[name][1]
            if id(flat) in self._transient:  # (folded values never take pooled buffers)
                raise AssertionError(f"value {name!r} would be kept in a transient buffer")
            self._live[name] = (FOREVER, flat)
