"""The per-process compile counter: the ANE compiler leaks, so a process gets ~119 compiles.

Counting happens in :meth:`Backend.compile` after each successful compile, per backend name and
per process (a forked child starts from zero, like a fresh ``exec``). The simulator enforces the
same budget so budget-handling code (checkpoint + re-exec) is exercised on Linux.
"""

from __future__ import annotations

import os
import threading

from anetrain.runtime.errors import CompileBudgetExceeded

_lock = threading.Lock()
_counts: dict[str, int] = {}
_pid = os.getpid()


def _check_fork() -> None:
    global _pid
    if os.getpid() != _pid:
        _pid = os.getpid()
        _counts.clear()


def compile_count(backend: str) -> int:
    """Successful compiles by ``backend`` in this process."""
    with _lock:
        _check_fork()
        return _counts.get(backend, 0)


def check_budget(backend: str, budget: int) -> None:
    """Raise :class:`CompileBudgetExceeded` if one more compile would exceed ``budget``."""
    used = compile_count(backend)
    if used >= budget:
        raise CompileBudgetExceeded(
            f"{backend}: compile budget exhausted ({used} of {budget} compiles used in this "
            "process; the ANE compiler leaks resources per compile). Save a checkpoint and "
            "restart the process (os.execv), or compile fewer kernels (dynamic weights).",
            used=used,
            budget=budget,
        )


def record_compile(backend: str) -> int:
    """Count one successful compile; returns the new count."""
    with _lock:
        _check_fork()
        _counts[backend] = _counts.get(backend, 0) + 1
        return _counts[backend]


def reset_compile_count(backend: str | None = None) -> None:
    """Forget the count (tests, or the simulator after a simulated restart).

    This only resets bookkeeping: on real hardware the leak is still there, and only a new
    process really starts afresh.
    """
    with _lock:
        if backend is None:
            _counts.clear()
        else:
            _counts.pop(backend, None)
