"""The model: time of one eval of a program on one chip, from the bytes that really move.

Where each byte lives decides its price:
- **Weights stay on chip between evaluations** up to the SRAM capacity (the chip profile's
  ``sram_bytes``), in program order; the rest stream from DRAM on every eval. A chain whose
  weights exceed the SRAM therefore streams only the excess: a 64 MiB chain on an M5 moves
  32 MiB per eval, which its 153 GB/s allow at the measured speed; streaming all 64 would not.
- **Resident weights are fed to the cores** at ``sram_gbps`` if the op's weights fit the
  ``core_buffer_mib`` a core set holds for one op, else at the slower ``big_op_gbps``: one
  8 MiB conv is far slower per byte than 16 half-MiB convs, on an M4 and an M4 Max alike.
- **Some machines never return an eval sooner than a floor** (``floor_us``): on the M4 Max a
  lone 256-channel conv takes 0.32-0.38 ms but an 8 MiB conv 0.22-0.25 ms, the same as on an
  M4 mini, whose small convs take 0.08-0.11 ms. A floor, not an added cost, is what fits both.
- **Intermediate activations stay on chip** (``sram_gbps``); program inputs and outputs cross
  DRAM (``dram_gbps``, never above the SoC's ``memory_gbps``).

    op time  = max(flops / rate, resident / feed + act / sram_gbps, (streamed + io) / dram_gbps)
               + per_op_us                          rate = peak_tflops [x int8_factor]
    eval     = max(floor_us, dispatch_us + sum(op times))

More FLOPs or more bytes never make a program faster (tested). :class:`OpTable` holds many
programs' ops as flat arrays, so the fit prices all reference rows with the same code that
:func:`predict` uses for one program.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from anetrain.mil.ir import Program
from anetrain.perfmodel.costs import ProgramCost, program_cost
from anetrain.perfmodel.params import MIB, PerfParams

BOUNDS = ("compute", "sram", "dram", "fixed")


@dataclass(frozen=True)
class OpTime:
    name: str
    op_type: str
    ns: float
    bound: str  # "compute", "sram", "dram" or "fixed" (the per-op cost dominates)


@dataclass(frozen=True)
class Prediction:
    """Modeled time of one eval, with the per-op breakdown."""

    chip: str
    calibrated: bool
    total_ns: float
    dispatch_ns: float
    floor_ns: float
    ops: tuple[OpTime, ...]
    flops: int
    weight_bytes: int
    dram_bytes: int  # bytes crossing DRAM per eval: streamed weights and the I/O surfaces
    resident: bool  # all weights stay on chip between evaluations

    @property
    def ms(self) -> float:
        return self.total_ns / 1e6

    @property
    def tflops(self) -> float:
        return self.flops / self.total_ns / 1e3 if self.total_ns else 0.0

    def bound(self) -> str:
        """What limits the eval overall: the roof with the most op time, "dispatch", or
        "floor" (the machine's minimum eval time exceeds the work)."""
        if self.floor_ns > self.dispatch_ns + sum(op.ns for op in self.ops):
            return "floor"
        totals: dict[str, float] = {"dispatch": self.dispatch_ns}
        for op in self.ops:
            totals[op.bound] = totals.get(op.bound, 0.0) + op.ns
        return max(totals, key=lambda k: totals[k])


class OpTable:
    """The ops of several programs, each priced on its own chip, as flat arrays.

    Residency depends only on the chip's SRAM and core-buffer sizes, so it is settled here;
    :meth:`ns` then prices every op with per-row parameters in a few NumPy calls.
    """

    def __init__(self, costs: Sequence[ProgramCost], params: Sequence[PerfParams]) -> None:
        row, flops, int8, w, res, big, act, io = ([] for _ in range(8))
        for i, (cost, p) in enumerate(zip(costs, params, strict=True)):
            left = float(p.sram_bytes)
            for op in cost.ops:
                keep = min(float(op.weight_bytes), max(0.0, left))
                left -= op.weight_bytes
                row.append(i)
                flops.append(op.flops)
                int8.append(op.int8)
                w.append(op.weight_bytes)
                res.append(keep)
                big.append(op.weight_bytes > p.core_buffer_mib * MIB)
                act.append(op.act_bytes)
                io.append(op.io_bytes)
        self.n = len(costs)
        self.row = np.array(row, dtype=np.intp)
        self.flops = np.array(flops, dtype=float)
        self.int8 = np.array(int8, dtype=bool)
        self.resident = np.array(res, dtype=float)
        self.streamed = np.array(w, dtype=float) - self.resident
        self.big = np.array(big, dtype=bool)
        self.act = np.array(act, dtype=float)
        self.io = np.array(io, dtype=float)

    def ns(self, params: Sequence[PerfParams]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(eval ns per row, ns per op, index into BOUNDS per op) with ``params[i]`` for row i."""

        def col(key: str) -> np.ndarray:
            return np.array([getattr(p, key) for p in params], dtype=float)[self.row]

        rate = col("peak_tflops") * 1e3 * np.where(self.int8, col("int8_factor"), 1.0)
        sram = col("sram_gbps")  # GB/s is bytes per ns
        feed = np.where(self.big, col("big_op_gbps"), sram)
        roofs = np.stack(
            [
                self.flops / rate,
                self.resident / feed + self.act / sram,
                (self.streamed + self.io) / col("dram_gbps"),
            ]
        )
        fixed = col("per_op_us") * 1e3
        top = roofs.max(axis=0)
        bound = np.where(fixed > top, 3, roofs.argmax(axis=0))
        op_ns = top + fixed
        dispatch = np.array([p.dispatch_us * 1e3 for p in params])
        floor = np.array([p.floor_us * 1e3 for p in params])
        work = np.bincount(self.row, weights=op_ns, minlength=self.n) + dispatch
        return np.maximum(floor, work), op_ns, bound

    def dram_bytes(self) -> np.ndarray:
        """Bytes crossing DRAM per eval, per row."""
        return np.bincount(self.row, weights=self.streamed + self.io, minlength=self.n)


def predict(program: Program | ProgramCost, params: PerfParams) -> Prediction:
    """Modeled time of one eval of ``program`` with ``params``."""
    cost = program if isinstance(program, ProgramCost) else program_cost(program)
    table = OpTable([cost], [params])
    total, op_ns, bound = table.ns([params])
    ops = tuple(
        OpTime(op.name, op.op_type, float(t), BOUNDS[b])
        for op, t, b in zip(cost.ops, op_ns, bound, strict=True)
    )
    return Prediction(
        chip=params.chip,
        calibrated=params.calibrated,
        total_ns=float(total[0]),
        dispatch_ns=params.dispatch_us * 1e3,
        floor_ns=params.floor_us * 1e3,
        ops=ops,
        flops=cost.flops,
        weight_bytes=cost.weight_bytes,
        dram_bytes=int(table.dram_bytes()[0]),
        resident=cost.weight_bytes <= params.sram_bytes,
    )


def compile_load_ms(params: PerfParams, kernels: int = 1) -> float:
    """Modeled compile + load time of ``kernels`` kernels (per-kernel costs: see specs)."""
    return kernels * (params.compile_ms + params.load_ms)
