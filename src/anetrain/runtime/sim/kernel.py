"""The simulated kernel: read input surfaces, run the planned steps, write the outputs."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from anetrain.memory import release_pages
from anetrain.mil.types import FP16
from anetrain.runtime.errors import MultiInputError
from anetrain.runtime.fp16 import f16_bits_to_f32, f32_to_f16_bits
from anetrain.runtime.kernel import Kernel, Request
from anetrain.runtime.sim.plan import Plan
from anetrain.runtime.surface import Surface, TensorSpec, ValueSurface


class SimKernel(Kernel):
    """A :class:`Kernel` executed by NumPy from a compile-time :class:`Plan`."""

    def __init__(self, plan: Plan, **kwargs: Any) -> None:
        self.plan = plan
        super().__init__(**kwargs)
        # The default output surfaces hold the plan's owned output buffers, so evaluating
        # into them copies nothing out. A request with other output surfaces leaves them as
        # they were (the hardware contract): their values are saved around its eval.
        self.outputs = tuple(
            self._allocate_surface(spec, storage=value) if owned else surface
            for spec, value, owned, surface in zip(
                self.output_specs, plan.outputs, plan.owned_outputs, self.outputs, strict=True
            )
        )
        self._held = [
            surface if owned else None
            for surface, owned in zip(self.outputs, plan.owned_outputs, strict=True)
        ]
        # The plan's input buffers are transient (shared with the backend's other kernels):
        # every input surface, the default ones too, is copied in at each eval, except the
        # staging surfaces, which hold the buffers themselves (see staging_input).
        self._staging: dict[int, Surface] = {}

    def _allocate_surface(self, spec: TensorSpec, storage: np.ndarray | None = None) -> Surface:
        """Value-stored surfaces: no fp16 encode/decode per eval (see :class:`ValueSurface`);
        on the fast path their writes round in one numba pass."""
        fast = self.plan.fast
        return ValueSurface(
            spec.shape,
            spec.dtype,
            name=spec.name,
            storage=storage,
            store_block=None if fast is None else fast.store_block,
        )

    def staging_input(self, index: int = 0) -> Surface:
        """A surface holding input ``index`` in the plan's own buffer, so an eval copies
        nothing in; the buffer lies in the backend's shared workspace, so its contents are
        undefined once another kernel of the backend has been evaluated or compiled: write
        all of it before each eval."""
        surface = self._staging.get(index)
        if surface is None:
            spec = self.input_specs[index]
            surface = self._staging[index] = self._allocate_surface(
                spec, storage=self.plan.inputs[index]
            )
        return surface

    def release_memory(self) -> int:
        """Give back the plan's intermediate values and scratch (``Plan.transient``): dead
        between evals, and rewritten before any step reads them in the next."""
        with self.plan.lock or contextlib.nullcontext():
            return release_pages(self.plan.transient)

    def _evaluate(self, request: Request, qos: int) -> int | None:
        """With the plan's workspace lock held: no other kernel of the backend evaluates (or
        compiles) meanwhile, since they share the transient buffers."""
        with self.plan.lock or contextlib.nullcontext():
            return self._evaluate_locked(request)

    def _evaluate_locked(self, request: Request) -> int | None:
        if len(request.inputs) > 1 and not self.chip.multi_input_allowed:
            raise MultiInputError(
                f"kernel {self.name!r}: evaluate failed with status 0x1d: "
                f"{len(request.inputs)} input surfaces in one request, but "
                f"{self.chip.display} takes one; pack the inputs into one surface "
                "(e.g. along the spatial axis) and slice them apart in the program"
            )
        plan = self.plan
        for i, (surface, buf) in enumerate(zip(request.inputs, plan.inputs, strict=True)):
            if surface is self._staging.get(i):
                continue  # it holds the plan's buffer
            with surface.locked(read_only=True):
                dst = buf.reshape(surface.channels, surface.spatial)
                if isinstance(surface, ValueSurface):
                    np.copyto(dst, surface.values)
                elif surface.dtype is FP16:
                    f16_bits_to_f32(surface.bits, out=dst)
                else:
                    np.copyto(dst, surface.bits)
        saved = [
            held.values.copy()
            for held, surface in zip(self._held, request.outputs, strict=True)
            if held is not None and surface is not held
        ]
        with np.errstate(all="ignore"):
            for step in plan.steps:
                step()
        for surface, value, held in zip(request.outputs, plan.outputs, self._held, strict=True):
            if surface is held:
                continue
            with surface.locked():
                src = value.reshape(surface.channels, surface.spatial)
                if isinstance(surface, ValueSurface):
                    np.copyto(surface.values, src)  # op outputs are already fp16 values
                elif surface.dtype is FP16:
                    f32_to_f16_bits(src, out=surface.bits)
                else:
                    np.copyto(surface.bits, src)
        restore = iter(saved)
        for held, surface in zip(self._held, request.outputs, strict=True):
            if held is not None and surface is not held:
                np.copyto(held.values, next(restore))
        return None
