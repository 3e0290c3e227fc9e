"""The compile budget: the ANE compiler leaks resources per compile, so a process gets ~119
compiles (the chip profile's ``compile_budget``) before compiles start failing.

Each :class:`~anetrain.runtime.backend.Backend` instance owns one :class:`CompileBudget`, counted
in :meth:`Backend.compile` after each successful compile (and by an ane kernel that has to
recompile on reload). The simulator enforces the same budget, so code that must live within it
is exercised on Linux. On the hardware the leak is per process: use one ``ane`` backend per
process, and when the budget runs out, save a checkpoint and start a new process.
"""

from __future__ import annotations

import threading

from anetrain.runtime.errors import CompileBudgetExceeded


class CompileBudget:
    """``limit`` compiles for one backend instance; ``used`` so far."""

    def __init__(self, backend: str, limit: int) -> None:
        self.backend = backend
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise :class:`CompileBudgetExceeded` if one more compile would exceed the limit."""
        with self._lock:
            used, limit = self.used, self.limit
        if used >= limit:
            raise CompileBudgetExceeded(
                f"{self.backend}: compile budget exhausted ({used} of {limit} compiles used by "
                "this backend; the ANE compiler leaks resources per compile). Save a "
                "checkpoint and start a new process, or compile fewer kernels (dynamic weights).",
                used=used,
                budget=limit,
            )

    def record(self) -> int:
        """Count one successful compile; returns the new count."""
        with self._lock:
            self.used += 1
            return self.used
