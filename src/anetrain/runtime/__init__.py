"""Run MIL programs: ``compile(program, weights) -> Kernel``, on the ANE or the simulator.

    from anetrain import runtime
    k = runtime.compile(prog, {"@model_path/weights/w.bin": blob}, backend="sim", chip="m4")
    k.input.write(x)           # [C, S] float32 -> fp16 surface
    k.eval()
    y = k.output.read()        # [C, S] float32
    r = k.request(other_surface); r.eval()   # same kernel, another input, shared outputs

Backends are imported lazily by name (``get_backend``), so importing this package never
imports PyObjC. See docs/runtime.md.
"""

from __future__ import annotations

from typing import Any

from anetrain.hardware.chips import DEFAULT_CHIP, ChipProfile, chip_names, get_chip
from anetrain.mil.ir import Program
from anetrain.runtime.backend import Backend, CompileSource, Weights
from anetrain.runtime.budget import CompileBudget
from anetrain.runtime.errors import (
    AneRuntimeError,
    BackendUnavailable,
    ChipProfileError,
    CompileBudgetExceeded,
    CompileError,
    EvalError,
    KernelUnloadedError,
    MultiInputError,
    SurfaceError,
    UnknownChipError,
    UnsupportedOpError,
    WeightsError,
)
from anetrain.runtime.kernel import DEFAULT_QOS, Kernel, PerfStats, Request
from anetrain.runtime.registry import backend_status, get_backend, register_backend
from anetrain.runtime.surface import Surface, TensorSpec, io_copy, io_read_fp16, io_write_fp16_at


def compile(
    program: Program | str,
    weights: Weights | None = None,
    *,
    backend: str | Backend = "auto",
    chip: str | ChipProfile | None = None,
    qos: int = DEFAULT_QOS,
    name: str | None = None,
    **options: Any,
) -> Kernel:
    """Compile and load ``program`` (MIL text or :class:`Program`) with ``weights``.

    ``weights`` maps each BLOBFILE path ("@model_path/weights/<file>.bin") to the MILBlob v2
    file's bytes. ``backend`` is "sim", "ane", "auto" or a :class:`Backend` instance (then
    ``chip`` and ``options`` must be omitted); ``options`` go to the backend constructor.
    """
    if isinstance(backend, Backend):
        if chip is not None or options:
            raise TypeError("pass chip/options to the Backend constructor, not to compile()")
        be = backend
    else:
        be = get_backend(backend, chip, **options)
    return be.compile(program, weights, qos=qos, name=name)


__all__ = [
    "DEFAULT_CHIP",
    "DEFAULT_QOS",
    "AneRuntimeError",
    "Backend",
    "BackendUnavailable",
    "ChipProfile",
    "ChipProfileError",
    "CompileBudget",
    "CompileBudgetExceeded",
    "CompileError",
    "CompileSource",
    "EvalError",
    "Kernel",
    "KernelUnloadedError",
    "MultiInputError",
    "PerfStats",
    "Request",
    "Surface",
    "SurfaceError",
    "TensorSpec",
    "UnknownChipError",
    "UnsupportedOpError",
    "Weights",
    "WeightsError",
    "backend_status",
    "chip_names",
    "compile",
    "get_backend",
    "get_chip",
    "io_copy",
    "io_read_fp16",
    "io_write_fp16_at",
    "register_backend",
]
