"""The ``ane`` backend: compile, load and evaluate MIL programs on the Neural Engine.

The call sequence is maderix/ANE's (``training/ane_runtime.h``): descriptor from the MIL text
and the weights dict -> in-memory model -> model folder under ``NSTemporaryDirectory()`` ->
compile -> load (one retry after 100 ms) -> IOSurfaces (at least the chip's surface floor)
wrapped as ``_ANEIOSurfaceObject`` -> one ``_ANERequest`` per set of surfaces (inputs and
outputs each ordered by MIL name, perfStats nil) -> evaluate -> unload. The model folder stays
until the kernel is finalized, so ``load()`` after ``unload()`` reuses the compiled artefacts.
All Objective-C goes through :class:`~anetrain.runtime.ane.objc_bridge.AneBridge`; nothing here
imports PyObjC, so this module imports (and is linted and tested) on Linux. See docs/runtime.md
for every assumption about the private API and its public source.
"""

from __future__ import annotations

import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anetrain.hardware.chips import DEFAULT_CHIP, ChipProfile, get_chip
from anetrain.mil.types import FP16, FP32
from anetrain.runtime.ane.device import detect_chip, host_macos
from anetrain.runtime.ane.iosurface import AneSurface, surface_alloc_bytes
from anetrain.runtime.ane.modeldir import MODEL_DIRS, weight_files
from anetrain.runtime.ane.objc_bridge import AneCallError, bridge_status, load_bridge
from anetrain.runtime.ane.selectors import perf_stats_mask
from anetrain.runtime.backend import Backend, CompileSource
from anetrain.runtime.budget import CompileBudget
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
    the compile budget, the multi-input rule and the surface floor. ``perf_stats`` (off by
    default: requests pass nil, as the original does) sets the model's perfStatsMask and passes
    an array holding one ``_ANEPerformanceStats`` to report ``hw_ns``, falling back to nil on
    any failure. ``bridge`` replaces the PyObjC bridge (the conformance tests pass one built
    on stand-in modules).
    """

    name = "ane"

    def __init__(
        self,
        chip: str | ChipProfile | None = None,
        *,
        compile_budget: int | None = None,
        perf_stats: bool = False,
        bridge: Any = None,
    ) -> None:
        if chip is None:
            chip = detect_chip().chip or DEFAULT_CHIP
        if not isinstance(chip, ChipProfile):  # the dialect depends on this Mac's macOS
            chip = get_chip(chip, host_macos())
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
        model, ident, folder, stats_ok = compile_and_load(
            bridge, program, source.qos, perf_stats=self.perf_stats
        )
        return AneKernel(
            bridge=bridge,
            model=model,
            program=program,
            ident=ident,
            folder=folder,
            perf_stats=stats_ok,
            budget=self.budget,
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
    """The backend half of a :class:`Request`: the ``_ANERequest`` and its perf-stats object
    (None when the request passes perfStats nil)."""

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


def compile_and_load(
    bridge: Any, program: _Program, qos: int, *, perf_stats: bool = False
) -> tuple[Any, str, Path, bool]:
    """Descriptor -> model -> model folder -> compile -> load.

    Returns ``(model, id, folder, perf_stats)``, the last False if the perf-stats mask could not
    be set. On failure the folder is released and nothing stays loaded.
    """
    try:
        descriptor = bridge.descriptor(program.mil, program.weights)
        model = bridge.model(descriptor)
        ident = bridge.hex_identifier(model)
        root = bridge.temp_root()
    except AneCallError as err:
        raise CompileError(f"kernel {program.name!r}: {err}") from err
    if perf_stats:
        try:
            bridge.set_perf_stats_mask(model, perf_stats_mask())
        except AneCallError:
            perf_stats = False
    folder = MODEL_DIRS.acquire(root, ident, program.mil, program.files)
    try:
        _compile_model(bridge, model, qos, program.name)
        load_with_retry(bridge, model, qos, program.name)
    except BaseException:
        MODEL_DIRS.release(folder)
        raise
    return model, ident, folder, perf_stats


def _compile_model(bridge: Any, model: Any, qos: int, name: str) -> None:
    try:
        bridge.compile(model, qos)
    except AneCallError as err:
        raise CompileError(f"ANE compile of kernel {name!r} failed: {err}") from err


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
            f"ANE load of kernel {name!r} failed twice: {err}. If this process "
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
        budget: CompileBudget,
        **kwargs: Any,
    ) -> None:
        # set before super().__init__, which allocates the default surfaces through the hooks
        self._bridge = bridge
        self._model = model
        self._program = program
        self._ident = ident
        self._folder = folder
        self._perf_stats = perf_stats
        self._budget = budget
        # the folder holds the compiled artefacts load() needs again: kept until finalization
        self._release_folder = weakref.finalize(self, MODEL_DIRS.release, folder)
        chip = kwargs["chip"]
        self._input_alloc = surface_alloc_bytes(kwargs["input_specs"], chip.min_surface_bytes)
        self._output_alloc = surface_alloc_bytes(kwargs["output_specs"], chip.min_surface_bytes)
        try:
            super().__init__(**kwargs)
        except BaseException:  # e.g. IOSurface allocation failed: leave nothing behind
            _quiet_unload(bridge, model, kwargs.get("qos", DEFAULT_QOS))
            self._release_folder()
            raise

    @property
    def folder(self) -> Path | None:
        """The model folder (kept across unload/load; None once released)."""
        return self._folder if self._release_folder.alive else None

    # ---- hooks ------------------------------------------------------------------------------

    def _alloc_for(self, spec: TensorSpec) -> int:
        if spec in self.input_specs:
            return self._input_alloc
        if spec in self.output_specs:
            return self._output_alloc
        return surface_alloc_bytes([spec], self.chip.min_surface_bytes)

    def _allocate_surface(self, spec: TensorSpec) -> Surface:
        return AneSurface(self._bridge, spec, self._alloc_for(spec))

    def _ane_objects(
        self, kind: str, surfaces: Sequence[Surface], specs: Sequence[TensorSpec]
    ) -> tuple[Any, ...]:
        """The ``_ANEIOSurfaceObject``s in the order the ANE binds them: by MIL name (Orion
        reports that several inputs or outputs are matched alphabetically, not by position)."""
        pairs = []
        for surface, spec in zip(surfaces, specs, strict=True):
            if not (isinstance(surface, AneSurface) and surface.belongs_to(self._bridge)):
                raise SurfaceError(
                    f"kernel {self.name!r}: {surface.describe()} is not an IOSurface of the ane "
                    "backend; allocate surfaces with kernel.new_surface()"
                )
            if surface.alloc_bytes != self._alloc_for(spec):
                raise SurfaceError(
                    f"kernel {self.name!r}: {kind} {surface.describe()} has a "
                    f"{surface.alloc_bytes}-byte IOSurface, but this kernel's {kind}s must all "
                    f"be {self._alloc_for(spec)} bytes; allocate it with kernel.new_surface()"
                )
            pairs.append((spec.name, surface.ane_object))
        return tuple(obj for _, obj in sorted(pairs, key=lambda p: p[0]))

    def _prepare_request(self, inputs: Sequence[Surface], outputs: Sequence[Surface]) -> _Handle:
        ins = self._ane_objects("input", inputs, self.input_specs)
        outs = self._ane_objects("output", outputs, self.output_specs)
        return self._build_handle(ins, outs, with_stats=self._perf_stats)

    def _build_handle(
        self, inputs: tuple[Any, ...], outputs: tuple[Any, ...], *, with_stats: bool
    ) -> _Handle:
        stats = self._bridge.new_perf_stats() if with_stats else None
        try:
            request = self._bridge.make_request(inputs, outputs, stats)
        except AneCallError as err:
            if stats is not None:  # perf stats are optional: fall back to nil
                self._perf_stats = False
                return self._build_handle(inputs, outputs, with_stats=False)
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
            if err.status == MultiInputError.status and len(request.inputs) > 1:
                raise MultiInputError(
                    f"kernel {self.name!r}: evaluate of {len(request.inputs)} input surfaces "
                    f"failed with status 0x1d ({err.description}); use one input surface"
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
        if handle.stats is None:
            return None
        return self._bridge.hw_time(handle.stats, handle.request)

    def _drop_stats(self, handle: _Handle) -> None:
        """Evaluate failed with a perf-stats object attached: stop attaching them."""
        self._perf_stats = False
        fresh = self._build_handle(handle.inputs, handle.outputs, with_stats=False)
        handle.request, handle.stats = fresh.request, None

    def _unload(self) -> None:
        """Unload the program; the model folder stays (load() needs its artefacts)."""
        try:
            self._bridge.unload(self._model, self.qos)
        except AneCallError as err:
            # teardown: warn rather than raise, so __exit__ never hides the original exception
            warnings.warn(
                f"kernel {self.name!r}: {err}; the kernel is marked unloaded",
                RuntimeWarning,
                stacklevel=3,
            )

    def _load(self) -> None:
        """Load again from the kept folder (retry once). If the folder now holds another
        program's files (same text and keys, other weight bytes) or the load fails, rewrite
        this program's files and compile again, counted in the compile budget."""
        bridge, program = self._bridge, self._program
        stale = MODEL_DIRS.ensure(self._folder, program.mil, program.files)
        if not stale:
            try:
                load_with_retry(bridge, self._model, self.qos, self.name)
                return
            except CompileError:
                pass
        self._budget.check()
        _compile_model(bridge, self._model, self.qos, self.name)
        load_with_retry(bridge, self._model, self.qos, self.name)
        self._budget.record()
