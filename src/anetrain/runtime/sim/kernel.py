"""The simulated kernel: read input surfaces, run the planned steps, write the outputs."""

from __future__ import annotations

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
        # The default input surfaces hold the plan's input buffers too, so evaluating on them
        # copies nothing in. A request with other input surfaces first moves a default
        # surface's values aside (its storage then is a copy), and the next eval on the
        # default surface moves them back: one copy per switch, none in a run of either.
        self.inputs = tuple(
            self._allocate_surface(spec, storage=buf)
            for spec, buf in zip(self.input_specs, plan.inputs, strict=True)
        )
        self._home = [True] * len(self.inputs)  # default input i holds plan.inputs[i]
        self._aside: list[np.ndarray | None] = [None] * len(self.inputs)

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

    def release_memory(self) -> int:
        """Give back the plan's intermediate values and scratch (``Plan.transient``): dead
        between evals, and rewritten before any step reads them in the next."""
        return release_pages(self.plan.transient)

    def _evaluate(self, request: Request, qos: int) -> int | None:
        if len(request.inputs) > 1 and not self.chip.multi_input_allowed:
            raise MultiInputError(
                f"kernel {self.name!r}: evaluate failed with status 0x1d: "
                f"{len(request.inputs)} input surfaces in one request, but "
                f"{self.chip.display} takes one; pack the inputs into one surface "
                "(e.g. along the spatial axis) and slice them apart in the program"
            )
        plan = self.plan
        for i, (surface, buf) in enumerate(zip(request.inputs, plan.inputs, strict=True)):
            own = self.inputs[i]
            rows = buf.reshape(own.channels, own.spatial)
            if surface is own:
                if not self._home[i]:  # its values were moved aside: bring them back
                    np.copyto(rows, own.values)
                    own.rebind(rows)
                    self._home[i] = True
                continue
            if self._home[i]:  # the plan buffer is about to be overwritten: move aside
                aside = self._aside[i]
                if aside is None:
                    aside = self._aside[i] = np.empty_like(rows)
                np.copyto(aside, rows)
                own.rebind(aside)
                self._home[i] = False
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
