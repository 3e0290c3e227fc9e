"""The ``sim`` backend: resolve weights, plan, wrap (the shared compile path validated the
program against the chip profile and the planners' op set)."""

from __future__ import annotations

from anetrain.hardware.chips import ChipProfile
from anetrain.runtime.backend import Backend, CompileSource
from anetrain.runtime.sim.buffers import Workspace
from anetrain.runtime.sim.fast import resolve_fast
from anetrain.runtime.sim.kernel import SimKernel
from anetrain.runtime.sim.ops import PLANNERS
from anetrain.runtime.sim.plan import build_plan
from anetrain.runtime.sim.weights import WeightResolver
from anetrain.runtime.surface import TensorSpec


class SimBackend(Backend):
    """Runs MIL programs in NumPy with fp16 storage semantics and the chip's known quirks.

    ``flush_subnormals`` overrides the profile's flag (flush fp16 subnormal results to zero).
    ``fast`` picks the execution path (:mod:`anetrain.runtime.sim.fast`): None takes the numba
    fast path when it is installed (unless ``ANETRAIN_SIM_FAST=0``), False the NumPy reference
    path, True requires the fast path. Both give bit-identical results.
    """

    name = "sim"

    def __init__(
        self,
        chip: str | ChipProfile | None = None,
        *,
        compile_budget: int | None = None,
        flush_subnormals: bool | None = None,
        fast: bool | None = None,
    ) -> None:
        super().__init__(chip, compile_budget=compile_budget)
        self.fast = resolve_fast(fast)
        self.flush_subnormals = (
            self.chip.flush_subnormals if flush_subnormals is None else flush_subnormals
        )
        self.workspace = Workspace()  # the transient buffers of every kernel compiled here

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    def supported_ops(self) -> set[str]:
        return {"const", *PLANNERS}

    def _compile(self, source: CompileSource) -> SimKernel:
        program = source.program
        fn = program.main
        with self.workspace.lock:  # folding constants runs steps in the shared buffers
            plan = build_plan(
                fn,
                self.chip,
                WeightResolver(source.weights, self.chip),
                flush_subnormals=self.flush_subnormals,
                fast=self.fast,
                workspace=self.workspace,
            )
        return SimKernel(
            plan,
            name=source.name,
            backend=self.name,
            chip=self.chip,
            input_specs=[TensorSpec(v.name, v.dtype, v.shape) for v in fn.inputs],
            output_specs=[TensorSpec(v.name, v.dtype, v.shape) for v in fn.outputs],
            qos=source.qos,
            mil_text=source.text,
        )
