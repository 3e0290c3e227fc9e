"""The ``ane`` backend: compile, load and evaluate MIL programs on the Neural Engine.

The call sequence is the original's (seed-inventory §2): descriptor from the MIL text and the
weights dict -> in-memory model -> model folder under ``NSTemporaryDirectory()`` -> compile ->
load (one retry after 100 ms) -> IOSurfaces wrapped as ``_ANEIOSurfaceObject`` -> one
``_ANERequest`` per set of surfaces -> evaluate -> unload and remove the folder. All
Objective-C goes through :class:`~anetrain.runtime.ane.objc_bridge.AneBridge`; nothing here
imports PyObjC, so this module imports (and is linted and tested) on Linux.
"""

from __future__ import annotations

import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anetrain.mil.types import FP16, FP32
from anetrain.runtime import budget
from anetrain.runtime.ane.device import detect_chip
from anetrain.runtime.ane.iosurface import AneSurface
from anetrain.runtime.ane.modeldir import MODEL_DIRS, weight_files
from anetrain.runtime.ane.objc_bridge import AneCallError, bridge_status, load_bridge
from anetrain.runtime.backend import Backend, CompileSource
from anetrain.runtime.chips import DEFAULT_CHIP, ChipProfile
from anetrain.runtime.errors import (
    CompileError,
    EvalError,
    MultiInputError,
    SurfaceError,
    UnsupportedOpError,
)
from anetrain.runtime.kernel import DEFAULT_QOS, Kernel, Request
from anetrain.runtime.surface import Surface, TensorSpec

LOAD_RETRY_DELAY_S = 0.1  # the original waits 100 ms for "ANE slot reclamation", then retries


class AneBackend(Backend):
    """Runs MIL programs on the Neural Engine through the private ``_ANEInMemoryModel`` API.

    ``chip`` defaults to the detected chip (brand string, else ANE subtype, else m4): it sets
    the compile budget and the multi-input rule. ``perf_stats`` attaches an
    ``_ANEPerformanceStats`` to each request to report ``hw_ns``. ``bridge`` replaces the
    PyObjC bridge (tests).
    """

    name = "ane"

    def __init__(
        self,
        chip: str | ChipProfile | None = None,
        *,
        compile_budget: int | None = None,
        perf_stats: bool = True,
        bridge: Any = None,
    ) -> None:
        if chip is None:
            chip = detect_chip().chip or DEFAULT_CHIP
        super().__init__(chip, compile_budget=compile_budget)
        self.perf_stats = perf_stats
        self._bridge = bridge

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            return bridge_status()
        except Exception as err:  # must not raise
            return False, f"{type(err).__name__}: {err}"

    @property
    def bridge(self) -> Any:
        """The PyObjC bridge; raises BackendUnavailable (before any state exists) if none."""
        return self._bridge if self._bridge is not None else load_bridge()

    def _compile(self, source: CompileSource) -> AneKernel:
        bridge = self.bridge
        fn = source.program.main
        input_specs = [TensorSpec(v.name, v.dtype, v.shape) for v in fn.inputs]
        output_specs = [TensorSpec(v.name, v.dtype, v.shape) for v in fn.outputs]
        _check_io(input_specs, output_specs)
        program = _Program(
            mil=source.text.encode("utf-8"),
            weights=source.weights,
            files=weight_files(source.weights),
            name=source.name,
        )
        model, ident, folder = compile_and_load(bridge, program, source.qos)
        return AneKernel(
            bridge=bridge,
            model=model,
            program=program,
            ident=ident,
            folder=folder,
            perf_stats=self.perf_stats,
            compile_budget=self.compile_budget,
            name=source.name,
            backend=self.name,
            chip=self.chip,
            input_specs=input_specs,
            output_specs=output_specs,
            qos=source.qos,
            mil_text=source.text,
        )


@dataclass(frozen=True)
class _Program:
    """What is needed to (re)populate the model folder and to recompile."""

    mil: bytes
    weights: Mapping[str, bytes]
    files: Mapping[str, bytes]
    name: str


@dataclass
class _Handle:
    """The backend half of a :class:`Request`: the ``_ANERequest`` and its perf-stats object."""

    request: Any
    stats: Any
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]


def _check_io(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
    for kind, specs in (("input", inputs), ("output", outputs)):
        for spec in specs:
            if spec.dtype not in (FP16, FP32):
                raise UnsupportedOpError(
                    f"{kind} '{spec.name}' is {spec.dtype}; ANE surfaces hold fp16 or fp32"
                )
            if len(spec.shape) < 2:
                raise UnsupportedOpError(
                    f"{kind} '{spec.name}' has shape {list(spec.shape)}; surfaces are [1, C, ...]"
                )


def compile_and_load(bridge: Any, program: _Program, qos: int) -> tuple[Any, str, Path]:
    """Descriptor -> model -> model folder -> compile -> load; returns (model, id, folder).

    On failure the folder is released and nothing stays loaded.
    """
    try:
        descriptor = bridge.descriptor(program.mil, program.weights)
        model = bridge.model(descriptor)
        ident = bridge.hex_identifier(model)
    except AneCallError as err:
        raise CompileError(f"kernel {program.name!r}: {err}") from err
    folder = MODEL_DIRS.acquire(bridge.temp_root(), ident, program.mil, program.files)
    try:
        _compile_model(bridge, model, qos, program.name)
        load_with_retry(bridge, model, qos, program.name)
    except BaseException:
        MODEL_DIRS.release(folder)
        raise
    return model, ident, folder


def _compile_model(bridge: Any, model: Any, qos: int, name: str) -> None:
    try:
        bridge.compile(model, qos)
    except AneCallError as err:
        raise CompileError(f"ANE compile of kernel {name!r} failed: {err.description}") from err


def load_with_retry(bridge: Any, model: Any, qos: int, name: str) -> None:
    """``loadWithQoS``, retried once after 100 ms as the original does."""
    try:
        bridge.load(model, qos)
        return
    except AneCallError:
        time.sleep(LOAD_RETRY_DELAY_S)
    try:
        bridge.load(model, qos)
    except AneCallError as err:
        raise CompileError(
            f"ANE load of kernel {name!r} failed twice: {err.description}. If this process "
            "has compiled many kernels, the ANE may be out of program slots: save a checkpoint "
            "and restart the process"
        ) from err


def _quiet_unload(bridge: Any, model: Any, qos: int) -> None:
    try:
        bridge.unload(model, qos)
    except Exception as err:
        warnings.warn(f"unloadWithQoS failed during cleanup: {err}", RuntimeWarning, stacklevel=3)


class AneKernel(Kernel):
    """A program compiled and loaded on the ANE, with IOSurface input and output surfaces."""

    def __init__(
        self,
        *,
        bridge: Any,
        model: Any,
        program: _Program,
        ident: str,
        folder: Path,
        perf_stats: bool,
        compile_budget: int,
        **kwargs: Any,
    ) -> None:
        # set before super().__init__, which allocates the default surfaces through the hooks
        self._bridge = bridge
        self._model = model
        self._program = program
        self._ident = ident
        self._folder = folder
        self._perf_stats = perf_stats
        self._compile_budget = compile_budget
        self._release_folder = weakref.finalize(self, MODEL_DIRS.release, folder)
        try:
            super().__init__(**kwargs)
        except BaseException:  # e.g. IOSurface allocation failed: leave nothing behind
            _quiet_unload(bridge, model, kwargs.get("qos", DEFAULT_QOS))
            self._release_folder()
            raise

    @property
    def folder(self) -> Path | None:
        """The model folder while loaded (None after unload)."""
        return self._folder if self._release_folder.alive else None

    # ---- hooks ------------------------------------------------------------------------------

    def _allocate_surface(self, spec: TensorSpec) -> Surface:
        return AneSurface(self._bridge, spec)

    def _prepare_request(self, inputs: Sequence[Surface], outputs: Sequence[Surface]) -> _Handle:
        for surface in (*inputs, *outputs):
            if not (isinstance(surface, AneSurface) and surface.belongs_to(self._bridge)):
                raise SurfaceError(
                    f"kernel {self.name!r}: {surface.describe()} is not an IOSurface of the ane "
                    "backend; allocate surfaces with kernel.new_surface()"
                )
        ins = tuple(s.ane_object for s in inputs if isinstance(s, AneSurface))
        outs = tuple(s.ane_object for s in outputs if isinstance(s, AneSurface))
        return self._build_handle(ins, outs, with_stats=self._perf_stats)

    def _build_handle(
        self, inputs: tuple[Any, ...], outputs: tuple[Any, ...], *, with_stats: bool
    ) -> _Handle:
        stats = self._bridge.new_perf_stats() if with_stats else None
        try:
            request = self._bridge.make_request(inputs, outputs, stats)
        except AneCallError as err:
            raise EvalError(f"kernel {self.name!r}: cannot build the request: {err}") from err
        return _Handle(request, stats, inputs, outputs)

    def _evaluate(self, request: Request, qos: int) -> int | None:
        if len(request.inputs) > 1 and not self.chip.multi_input_allowed:
            raise MultiInputError(
                f"kernel {self.name!r}: refused before reaching the ANE: {len(request.inputs)} "
                f"input surfaces in one request, but {self.chip.display} takes one (the hardware "
                "fails these with status 0x1d); pack the inputs into one surface (e.g. along "
                "the spatial axis) and slice them apart in the program"
            )
        handle = request.handle
        if not isinstance(handle, _Handle):
            raise SurfaceError(f"kernel {self.name!r}: the request was not built by this kernel")
        before = self._hw_time(handle)
        try:
            self._bridge.evaluate(self._model, qos, handle.request)
        except AneCallError as err:
            if err.code == MultiInputError.status:
                raise MultiInputError(
                    f"kernel {self.name!r}: evaluate failed with status 0x1d "
                    f"({err.description}); use one input surface"
                ) from err
            if handle.stats is None:
                raise EvalError(f"kernel {self.name!r}: {err}") from err
            self._drop_stats(handle)  # perf stats are a guess: retry once without them
            try:
                self._bridge.evaluate(self._model, qos, handle.request)
            except AneCallError as err2:
                raise EvalError(f"kernel {self.name!r}: {err2}") from err2
            return None
        after = self._hw_time(handle)
        # 0, unreadable or unchanged since the last eval: the ANE did not fill it in
        if not after or after == before:
            return None
        return after

    def _hw_time(self, handle: _Handle) -> int | None:
        return None if handle.stats is None else self._bridge.hw_time(handle.stats)

    def _drop_stats(self, handle: _Handle) -> None:
        """Evaluate failed with a perf-stats object attached: stop attaching them."""
        self._perf_stats = False
        fresh = self._build_handle(handle.inputs, handle.outputs, with_stats=False)
        handle.request, handle.stats = fresh.request, None

    def _unload(self) -> None:
        try:
            self._bridge.unload(self._model, self.qos)
        except AneCallError as err:
            # teardown: warn rather than raise, so __exit__ never hides the original exception
            warnings.warn(
                f"kernel {self.name!r}: {err}; the kernel is marked unloaded",
                RuntimeWarning,
                stacklevel=3,
            )
        finally:
            self._release_folder()

    def _load(self) -> None:
        """Load again: re-create the model folder, load (retry once); if that fails (the
        compiled program lived in the removed folder), compile again, counted in the budget."""
        bridge, program = self._bridge, self._program
        folder = MODEL_DIRS.acquire(bridge.temp_root(), self._ident, program.mil, program.files)
        try:
            try:
                load_with_retry(bridge, self._model, self.qos, self.name)
            except CompileError:
                budget.check_budget(self.backend, self._compile_budget)
                _compile_model(bridge, self._model, self.qos, self.name)
                load_with_retry(bridge, self._model, self.qos, self.name)
                budget.record_compile(self.backend)
        except BaseException:
            MODEL_DIRS.release(folder)
            raise
        self._folder = folder
        self._release_folder = weakref.finalize(self, MODEL_DIRS.release, folder)
