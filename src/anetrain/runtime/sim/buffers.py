"""Buffer reuse across a plan: an op output's buffer goes back to a pool once every op reading
the value (or a view of it) has run, and later outputs take pooled buffers that fit.

Lifetimes come from the IR before planning, conservatively: the outputs of the data-movement
ops (reshape, transpose, slices) count as views of their input, a value computed into a
concat's buffer lives as long as the concat's output, and function inputs and outputs and
constant-folded values are never reused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from anetrain.mil.ir import Function, Var

VIEW_OPS = frozenset({"reshape", "transpose", "slice_by_size", "slice_by_index"})
FOREVER = math.inf


def _vars(arg: object) -> Iterable[Var]:
    items = arg if isinstance(arg, tuple) else (arg,)
    return (a for a in items if isinstance(a, Var))


class BufferPool:
    """Hands out C-contiguous buffers for op outputs, reusing the dead ones."""

    def __init__(self, fn: Function, slots: dict[str, Var]) -> None:
        """``slots``: value name -> the concat output whose buffer it is computed in."""
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
        self._flats: dict[int, np.ndarray] = {}  # every buffer handed out, by id
        self._kept: set[int] = set()  # ids of buffers that ever held a value kept for good
        self.now = -1  # index of the op being planned

    def take(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A buffer for value ``name``: a dead one that fits (best fit), else a new one."""
        for key, (last, flat) in list(self._live.items()):
            if last < self.now:
                del self._live[key]
                self._free.append(flat)
        n = max(math.prod(shape), 1)
        fits = [i for i, b in enumerate(self._free) if b.dtype == dtype and b.size >= n]
        if fits:
            flat = self._free.pop(min(fits, key=lambda i: self._free[i].size))
        else:
            flat = np.zeros(n, dtype)
            self._flats[id(flat)] = flat
        last = self._last.get(name, self.now)
        if last == FOREVER:
            self._kept.add(id(flat))
        self._live[name] = (last, flat)
        return flat[: math.prod(shape)].reshape(shape)

    def pin(self, name: str) -> None:
        """Keep ``name``'s buffer for good (a constant-folded value)."""
        if name in self._live:
            self._live[name] = (FOREVER, self._live[name][1])
            self._kept.add(id(self._live[name][1]))

    def transient(self) -> list[np.ndarray]:
        """The buffers that only ever held values dead once an eval ends (neither function
        inputs or outputs nor constants): their contents need not survive between evals."""
        return [flat for key, flat in self._flats.items() if key not in self._kept]
