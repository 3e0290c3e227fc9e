"""The roofline model: time of one eval of a program on one chip.

    op time  = max(flops / compute_rate, dram_bytes / dram_bw, sram_bytes / sram_bw) + per_op
    eval     = dispatch + sum(op times)

``compute_rate`` is the fp16 peak, times ``int8_factor`` for ops on int8 weights. Weights are
resident (read at SRAM bandwidth) when all of the program's constants fit in ``sram_mib``;
otherwise every weight read streams from DRAM: a cliff, as the SRAM probes show. An op whose
own weights exceed the SRAM streams them ``spill_factor`` times (they cannot stay on chip
while the op sweeps its spatial tiles): what makes one 32 MiB conv far slower than a chain of
64 half-MiB convs with the same total weights. Program inputs and outputs always cross DRAM;
intermediate activations stay on chip.

Both more FLOPs and more bytes can only add time, and spilling only slows down, because the
parameters guarantee ``dram_gbps <= sram_gbps``.
"""

from __future__ import annotations

from dataclasses import dataclass

from anetrain.mil.ir import Program
from anetrain.perfmodel.costs import OpCost, ProgramCost, program_cost
from anetrain.perfmodel.params import PerfParams


@dataclass(frozen=True)
class OpTime:
    name: str
    op_type: str
    ns: float
    bound: str  # "compute", "dram", "sram" or "fixed" (the per-op cost dominates)


@dataclass(frozen=True)
class Prediction:
    """Modeled time of one eval, with the per-op breakdown."""

    chip: str
    calibrated: bool
    total_ns: float
    dispatch_ns: float
    ops: tuple[OpTime, ...]
    flops: int
    weight_bytes: int
    resident: bool

    @property
    def ms(self) -> float:
        return self.total_ns / 1e6

    @property
    def tflops(self) -> float:
        return self.flops / self.total_ns / 1e3 if self.total_ns else 0.0

    def bound(self) -> str:
        """What limits the eval overall: the roof with the most op time, or "dispatch"."""
        totals: dict[str, float] = {"dispatch": self.dispatch_ns}
        for op in self.ops:
            totals[op.bound] = totals.get(op.bound, 0.0) + op.ns
        return max(totals, key=lambda k: totals[k])


def op_time(op: OpCost, params: PerfParams, resident: bool) -> OpTime:
    rate = params.peak_tflops * 1e3 * (params.int8_factor if op.int8 else 1.0)  # FLOP per ns
    spill = params.spill_factor if op.weight_bytes > params.sram_bytes else 1.0
    dram = op.io_bytes + (0 if resident else op.weight_bytes * spill)
    sram = op.act_bytes + (op.weight_bytes if resident else 0)
    roofs = {
        "compute": op.flops / rate,
        "dram": dram / params.dram_gbps,  # GB/s is bytes per ns
        "sram": sram / params.sram_gbps,
    }
    bound = max(roofs, key=lambda k: roofs[k])
    fixed = params.per_op_us * 1e3
    if fixed > roofs[bound]:
        bound = "fixed"
    return OpTime(op.name, op.op_type, max(roofs.values()) + fixed, bound)


def predict(program: Program | ProgramCost, params: PerfParams) -> Prediction:
    """Modeled time of one eval of ``program`` with ``params``."""
    cost = program if isinstance(program, ProgramCost) else program_cost(program)
    resident = cost.weight_bytes <= params.sram_bytes
    ops = tuple(op_time(op, params, resident) for op in cost.ops)
    dispatch = params.dispatch_us * 1e3
    return Prediction(
        chip=params.chip,
        calibrated=params.calibrated,
        total_ns=dispatch + sum(o.ns for o in ops),
        dispatch_ns=dispatch,
        ops=ops,
        flops=cost.flops,
        weight_bytes=cost.weight_bytes,
        resident=resident,
    )
