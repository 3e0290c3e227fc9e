"""Runtime errors: every failure of compile, load or eval a user can cause has its own type.

All derive from :class:`AneRuntimeError` (itself an :class:`~anetrain.errors.AnetrainError`),
so callers can catch the family, or one failure specifically (e.g. the compile budget).
"""

from __future__ import annotations

from anetrain.errors import AnetrainError
from anetrain.hardware.errors import ChipProfileError, UnknownChipError


class AneRuntimeError(AnetrainError):
    """Base class of runtime (compile/load/eval) errors."""


class BackendUnavailable(AneRuntimeError):
    """The requested backend cannot run here (e.g. ``ane`` off macOS); the message says why."""


class CompileError(AneRuntimeError):
    """The program cannot be compiled for this backend/chip."""


class UnsupportedOpError(CompileError):
    """An op, dtype, dialect or shape the chip profile does not support; names the op."""


class WeightsError(CompileError):
    """A BLOBFILE reference cannot be resolved from the weights dict."""


class CompileBudgetExceeded(CompileError):
    """The backend's compile budget is used up (the ANE compiler leaks; ~119 per process).

    anetrain's trainer compiles its ten kernels once per run and never meets it; code that
    compiles more can recover as maderix/ANE does: save a checkpoint, start a fresh process.
    """

    def __init__(self, message: str, *, used: int, budget: int) -> None:
        super().__init__(message)
        self.used = used
        self.budget = budget


class EvalError(AneRuntimeError):
    """An evaluation request failed."""


class MultiInputError(EvalError):
    """A request with more than one input surface; the hardware fails these with status 0x1d."""

    status = 0x1D


class KernelUnloadedError(EvalError):
    """The kernel was unloaded; call ``load()`` (or compile again) before evaluating."""


class SurfaceError(AneRuntimeError):
    """A surface access out of range, or a surface incompatible with a kernel's I/O."""


__all__ = [
    "AneRuntimeError",
    "BackendUnavailable",
    "ChipProfileError",  # defined in anetrain.hardware (chip data lives there)
    "CompileBudgetExceeded",
    "CompileError",
    "EvalError",
    "KernelUnloadedError",
    "MultiInputError",
    "SurfaceError",
    "UnknownChipError",  # defined in anetrain.hardware
    "UnsupportedOpError",
    "WeightsError",
]
