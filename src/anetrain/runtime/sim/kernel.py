"""The simulated kernel: read input surfaces, run the planned steps, write the outputs."""

from __future__ import annotations

from typing import Any

import numpy as np

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

    def _allocate_surface(self, spec: TensorSpec) -> Surface:
        """Value-stored surfaces: no fp16 encode/decode per eval (see :class:`ValueSurface`)."""
        return ValueSurface(spec.shape, spec.dtype, name=spec.name)

    def _evaluate(self, request: Request, qos: int) -> int | None:
        if len(request.inputs) > 1 and not self.chip.multi_input_allowed:
            raise MultiInputError(
                f"kernel {self.name!r}: evaluate failed with status 0x1d: "
                f"{len(request.inputs)} input surfaces in one request, but "
                f"{self.chip.display} takes one; pack the inputs into one surface "
                "(e.g. along the spatial axis) and slice them apart in the program"
            )
        plan = self.plan
        for surface, buf in zip(request.inputs, plan.inputs, strict=True):
            with surface.locked(read_only=True):
                dst = buf.reshape(surface.channels, surface.spatial)
                if isinstance(surface, ValueSurface):
                    np.copyto(dst, surface.values)
                elif surface.dtype is FP16:
                    f16_bits_to_f32(surface.bits, out=dst)
                else:
                    np.copyto(dst, surface.bits)
        with np.errstate(all="ignore"):
            for step in plan.steps:
                step()
        for surface, value in zip(request.outputs, plan.outputs, strict=True):
            with surface.locked():
                src = value.reshape(surface.channels, surface.spatial)
                if isinstance(surface, ValueSurface):
                    np.copyto(surface.values, src)  # op outputs are already fp16 values
                elif surface.dtype is FP16:
                    f32_to_f16_bits(src, out=surface.bits)
                else:
                    np.copyto(surface.bits, src)
        return None
