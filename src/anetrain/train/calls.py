"""The one way a training pipeline evaluates a kernel, and the step's phase timer.

:class:`BoundKernel` is a compiled kernel with its :class:`~anetrain.kernels.dynamic.KernelSpec`
and its bindings (one input surface and request per layer, or the kernel's own surfaces).
Calling it writes the named inputs, evaluates and returns :class:`Outputs`, timing the surface
work as ``io`` and the evaluation as ``kernels``:

    out = sdpa(layer, xn=xn)                # write region "xn" of layer's surface, eval
    attn = out["attn"]                      # read an output block (or a declared span)
    wo(layer, attn=out.tap("attn"))         # another kernel's output: a surface-to-surface copy

Weight regions are written by :meth:`BoundKernel.stage`, from the parameter each region
declares; with ``prestage=False`` there is no surface per layer and each call writes its
layer's weights (from the parameters last staged, as they are at the call) into the kernel's
own input surface instead: a fraction of the memory for large models. A static pipeline
(weights baked as BLOBFILE constants) binds with ``own_outputs=True``, so every layer keeps its
forward taps in its own output surface for the backward kernels to copy from.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from anetrain import runtime
from anetrain.kernels.dynamic import KernelSpec, Region
from anetrain.model.params import Params


class PhaseTimer:
    """Accumulates wall time per phase (ms) for the per-step telemetry."""

    def __init__(self, phases: tuple[str, ...]) -> None:
        self.phases = phases
        self.ms: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[phase] += (time.perf_counter() - start) * 1e3

    def run(self, phase: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, its time counted in ``phase``."""
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.ms[phase] += (time.perf_counter() - start) * 1e3

    def take(self) -> dict[str, float]:
        out = {p: round(self.ms.get(p, 0.0), 3) for p in self.phases}
        self.ms.clear()
        return out


@dataclass(frozen=True)
class Tap:
    """An output region of an evaluated kernel, still in its output surface."""

    surface: runtime.Surface
    region: Region


class Outputs:
    """A kernel's outputs after one evaluation (valid until that surface is evaluated again)."""

    def __init__(self, spec: KernelSpec, surface: runtime.Surface, timer: PhaseTimer) -> None:
        self.spec, self.surface, self.timer = spec, surface, timer

    def __getitem__(self, name: str) -> np.ndarray:
        """Output block or span ``name`` as float32 ``[channels, S]``."""
        r = self.spec.output_region(name)
        with self.timer("io"):
            return self.surface.read(r.ch, r.channels)

    def tap(self, name: str) -> Tap:
        return Tap(self.surface, self.spec.output_region(name))


class BoundKernel:
    """A compiled kernel, its spec, and ``bindings`` input surfaces with their requests
    (``bindings=0``: the kernel's own input surface only, for weight-free kernels)."""

    def __init__(
        self,
        spec: KernelSpec,
        kernel: runtime.Kernel,
        timer: PhaseTimer,
        bindings: int = 0,
        *,
        own_outputs: bool = False,
        prestage: bool = True,
    ) -> None:
        self.spec, self.kernel, self.timer = spec, kernel, timer
        # prestage=False: no surface per layer; each call writes that layer's weights into the
        # kernel's own input first (less memory, one weight write per call instead of per stage)
        self._params: Params | None = None
        self.per_call = bindings > 0 and not prestage and not own_outputs
        self.rewrites_input = bindings == 0 or self.per_call  # every call writes all of it
        if self.rewrites_input:
            surface = kernel.staging_input()
            self.inputs, self.requests = [surface], [kernel.request(surface)]
        else:
            self.inputs = [kernel.new_surface() for _ in range(bindings)]
            self.requests = [
                kernel.request(s, outputs=[kernel.new_surface(kernel.output_specs[0])])
                if own_outputs
                else kernel.request(s)
                for s in self.inputs
            ]

    def __call__(self, binding: int = 0, /, **inputs: np.ndarray | Tap) -> Outputs:
        """Write ``inputs`` (arrays, or taps to copy) into ``binding``'s regions, evaluate."""
        if self.per_call:
            surface, request = self.inputs[0], self.requests[0]
            self._write_weights(surface, binding)
        else:
            surface, request = self.inputs[binding], self.requests[binding]
        with self.timer("io"):
            for name, value in inputs.items():
                dst = self.spec.input_region(name)
                if isinstance(value, Tap):
                    src = value.region
                    if (src.channels, src.width) != (dst.channels, dst.width):
                        raise ValueError(
                            f"kernel {self.spec.name!r}: cannot copy a {src.channels}x"
                            f"{src.width} tap into region {name!r} ({dst.channels}x{dst.width})"
                        )
                    surface.copy_from(
                        value.surface,
                        dst_ch=dst.ch,
                        src_ch=src.ch,
                        channels=src.channels,
                        dst_col=dst.col,
                    )
                else:
                    surface.write_block(value, dst.ch, dst.col)
        with self.timer("kernels"):
            request.eval()
        return Outputs(self.spec, request.outputs[0], self.timer)

    def release_memory(self) -> int:
        """Between windows (once the taps are consumed): the kernel's scratch, its output
        surfaces and, when every call writes the whole input (weights and activations), its
        input surface go back to the system; returns the bytes. Prestaged weights stay."""
        surfaces = {id(s): s for request in self.requests for s in request.outputs}
        if self.rewrites_input:
            surfaces[id(self.inputs[0])] = self.inputs[0]
        return self.kernel.release_memory() + sum(s.discard() for s in surfaces.values())

    def stage(self, params: Params | Any, only: Collection[str] | None = None) -> None:
        """Write every binding's weight regions from ``params`` (layer = binding index; anything
        whose ``params[name][layer]`` is a weight), or only those of the parameters ``only``
        (what an update changed); with per-call weights, remember ``params`` for the calls to
        write from (every region, so ``only`` changes nothing there)."""
        if self.per_call:
            self._params = params
            return
        for layer, surface in enumerate(self.inputs):
            self._write_weights(surface, layer, params, only)

    def stage_layer(
        self, params: Params | Any, layer: int, only: Collection[str] | None = None
    ) -> None:
        """:meth:`stage` for one binding, untimed (it runs on a worker thread, overlapped)."""
        if not self.per_call:
            self._write_weights(self.inputs[layer], layer, params, only, timed=False)

    def _write_weights(
        self,
        surface: runtime.Surface,
        layer: int,
        params: Params | Any = None,
        only: Collection[str] | None = None,
        *,
        timed: bool = True,
    ) -> None:
        if params is None:
            params = self._params
        if params is None:
            raise RuntimeError(f"kernel {self.spec.name!r}: weights were never staged")
        weights = [w for w in self.spec.weights.values() if only is None or w.param in only]
        with self.timer("io") if timed else nullcontext():
            for w in weights:
                data = w.layout(params[w.param][layer])
                surface.write_block(data, w.region.ch, w.region.col)
