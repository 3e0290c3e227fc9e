"""Backend-independent kernel and request objects.

A :class:`Kernel` is one compiled and loaded MIL program with default input and output
surfaces. A :class:`Request` binds input surfaces (and output surfaces, by default the kernel's
own) to it, the way one compiled ANE model serves every layer: each layer's pre-staged input
surface gets its own request, all sharing the kernel's outputs. Backends subclass
:class:`Kernel` and implement :meth:`Kernel._evaluate` (plus, optionally, the surface, request,
load and unload hooks).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from anetrain.hardware.chips import ChipProfile
from anetrain.runtime.errors import KernelUnloadedError, SurfaceError
from anetrain.runtime.surface import Surface, TensorSpec

DEFAULT_QOS = 21  # QOS_CLASS_DEFAULT (0x15), what the original passes everywhere
QOS_RANGE = range(0, 64)


def check_qos(qos: int) -> int:
    """QoS values 0..63 all evaluate on the hardware, with no measured effect."""
    if not isinstance(qos, int | np.integer) or int(qos) not in QOS_RANGE:
        raise ValueError(f"qos must be an integer in 0..63 (default {DEFAULT_QOS}), got {qos!r}")
    return int(qos)


@dataclass
class PerfStats:
    """What the backend measured at the last evaluation (modeled times come from
    :func:`anetrain.perfmodel.modeled_ns`, which any caller can ask beside any backend).

    ``wall_ns``: host wall-clock time of the eval call (surface conversion included).
    ``hw_ns``: hardware execution time when the backend can report it (``hwExecutionTime``).
    """

    wall_ns: int | None = None
    hw_ns: int | None = None
    evals: int = 0


class Request:
    """Input and output surfaces bound to a kernel; ``eval()`` runs the kernel on them."""

    def __init__(
        self,
        kernel: Kernel,
        inputs: Sequence[Surface],
        outputs: Sequence[Surface],
        handle: Any = None,
    ) -> None:
        self.kernel = kernel
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.handle = handle  # backend object (e.g. an _ANERequest)

    def eval(self, qos: int | None = None) -> None:
        self.kernel._run(self, qos)

    def __repr__(self) -> str:
        ins = ", ".join(s.describe() for s in self.inputs)
        return f"<Request {self.kernel.name!r} inputs=({ins})>"


class Kernel(ABC):
    """A compiled, loaded program. Use as a context manager to unload it on exit."""

    def __init__(
        self,
        *,
        name: str,
        backend: str,
        chip: ChipProfile,
        input_specs: Sequence[TensorSpec],
        output_specs: Sequence[TensorSpec],
        qos: int = DEFAULT_QOS,
        mil_text: str = "",
    ) -> None:
        self.name = name
        self.backend = backend
        self.chip = chip
        self.qos = check_qos(qos)
        self.mil_text = mil_text
        self.input_specs = tuple(input_specs)
        self.output_specs = tuple(output_specs)
        self.stats = PerfStats()
        self._loaded = True
        self.inputs: tuple[Surface, ...] = tuple(self.new_surface(s) for s in self.input_specs)
        self.outputs: tuple[Surface, ...] = tuple(self.new_surface(s) for s in self.output_specs)
        self._default_request: Request | None = None

    # ---- surfaces and requests ------------------------------------------------------------

    @property
    def input(self) -> Surface:
        """The first (usually only) default input surface."""
        return self.inputs[0]

    @property
    def output(self) -> Surface:
        """The first (usually only) output surface."""
        return self.outputs[0]

    def new_surface(self, spec: TensorSpec | int = 0) -> Surface:
        """A fresh surface shaped like ``spec`` (or like input number ``spec``)."""
        if not isinstance(spec, TensorSpec):
            spec = self.input_specs[spec]
        return self._allocate_surface(spec)

    def request(self, *inputs: Surface, outputs: Sequence[Surface] | None = None) -> Request:
        """Bind ``inputs`` (default: the kernel's own) and ``outputs`` (default: shared)."""
        ins = inputs or self.inputs
        outs = tuple(outputs) if outputs is not None else self.outputs
        self._check_surfaces("input", ins, self.input_specs)
        self._check_surfaces("output", outs, self.output_specs)
        return Request(self, ins, outs, self._prepare_request(ins, outs))

    def _check_surfaces(
        self, kind: str, surfaces: Sequence[Surface], specs: Sequence[TensorSpec]
    ) -> None:
        if len(surfaces) != len(specs):
            raise SurfaceError(
                f"kernel {self.name!r} has {len(specs)} {kind}(s), got {len(surfaces)} surfaces"
            )
        for surface, spec in zip(surfaces, specs, strict=True):
            if not isinstance(surface, Surface):
                raise SurfaceError(f"{kind} must be a Surface, got {type(surface).__name__}")
            if not surface.compatible(spec):
                raise SurfaceError(
                    f"kernel {self.name!r} {kind} '{spec.name}' is "
                    f"{spec.dtype}{list(spec.shape)}, got {surface.describe()}"
                )

    # ---- evaluation -----------------------------------------------------------------------

    def eval(self, qos: int | None = None) -> None:
        """Evaluate on the kernel's own input and output surfaces."""
        if self._default_request is None:
            self._default_request = self.request()
        self._run(self._default_request, qos)

    def __call__(self, *arrays: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """Convenience: write ``arrays`` to the inputs, eval, return float32 output copies."""
        if len(arrays) != len(self.inputs):
            raise SurfaceError(f"kernel {self.name!r} takes {len(self.inputs)} input array(s)")
        for surface, arr in zip(self.inputs, arrays, strict=True):
            surface.write(arr)
        self.eval()
        outs = tuple(s.numpy() for s in self.outputs)
        return outs[0] if len(outs) == 1 else outs

    def _run(self, request: Request, qos: int | None) -> None:
        if request.kernel is not self:
            raise SurfaceError("request belongs to a different kernel")
        if not self._loaded:
            raise KernelUnloadedError(
                f"kernel {self.name!r} is unloaded; call load() or compile it again"
            )
        q = self.qos if qos is None else check_qos(qos)
        start = time.perf_counter_ns()
        hw_ns = self._evaluate(request, q)
        self.stats.wall_ns = time.perf_counter_ns() - start
        self.stats.hw_ns = hw_ns
        self.stats.evals += 1

    def staging_input(self, index: int = 0) -> Surface:
        """A surface for callers that write the whole input before every eval: the kernel's
        own input surface here; the simulator's holds the input in its plan's buffer, in
        memory shared with its backend's other kernels (contents undefined after another
        kernel's eval), so evaluating copies nothing in."""
        return self.inputs[index]

    def release_memory(self) -> int:
        """Give back the memory of what holds nothing between evaluations (the simulator's
        intermediate values and scratch; surfaces keep their contents). Returns the bytes
        given back: 0 here, where the backend keeps no such host memory (the ANE)."""
        return 0

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._loaded

    def unload(self) -> None:
        """Release the loaded program (idempotent). Surfaces stay readable."""
        if self._loaded:
            self._unload()
            self._loaded = False

    def load(self) -> None:
        """Load again after :meth:`unload`, without recompiling (weights stay as compiled)."""
        if not self._loaded:
            self._load()
            self._loaded = True

    def __enter__(self) -> Kernel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unload()

    def __repr__(self) -> str:
        state = "loaded" if self._loaded else "unloaded"
        return f"<{type(self).__name__} {self.name!r} on {self.backend}/{self.chip.name} {state}>"

    # ---- backend hooks --------------------------------------------------------------------

    def _allocate_surface(self, spec: TensorSpec) -> Surface:
        """Allocate a surface for ``spec`` (the ane backend creates an IOSurface here)."""
        return Surface(spec.shape, spec.dtype, name=spec.name)

    def _prepare_request(self, inputs: Sequence[Surface], outputs: Sequence[Surface]) -> Any:
        """Backend object for a request (the ane backend builds an ``_ANERequest``)."""
        return None

    @abstractmethod
    def _evaluate(self, request: Request, qos: int) -> int | None:
        """Run the program on ``request``'s surfaces; return hardware ns if known."""

    def _unload(self) -> None:  # noqa: B027 - optional hook
        """Release backend resources."""

    def _load(self) -> None:  # noqa: B027 - optional hook
        """Re-acquire backend resources after :meth:`_unload`."""
