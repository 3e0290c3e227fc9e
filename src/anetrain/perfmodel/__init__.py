"""A calibrated per-chip performance model of the Neural Engine (see docs/perfmodel.md).

    from anetrain import perfmodel
    p = perfmodel.predict(program, perfmodel.get_params("m4max"))
    p.ms, p.tflops, p.bound()        # modeled eval time, throughput, limiting roof

The model is a roofline over the program's own ops (:mod:`.costs`): FLOPs against an fp16
(or INT8) compute roof, weight bytes against SRAM or DRAM bandwidth depending on whether all
weights fit on chip, surface bytes against DRAM, plus a dispatch and a per-op fixed cost.
Parameters live in ``params.json``; only the M4 Max is fitted to measurements.
"""

from __future__ import annotations

from anetrain.mil.ir import Program
from anetrain.perfmodel.costs import OpCost, ProgramCost, program_cost
from anetrain.perfmodel.params import (
    PerfModelError,
    PerfParams,
    get_params,
    known_chips,
    read_params_file,
)
from anetrain.perfmodel.roofline import OpTime, Prediction, predict
from anetrain.runtime.chips import ChipProfile


def modeled_ns(program: Program | str, chip: str | ChipProfile | PerfParams) -> int | None:
    """Modeled ns per eval of ``program`` (IR or MIL text) on ``chip``; None if the chip has
    no parameters. Callers ask this beside any backend (backends report only measured times)."""
    try:
        params = get_params(chip)
    except PerfModelError:
        return None
    if isinstance(program, str):
        from anetrain.mil.parser import parse_program

        program = parse_program(program)
    return round(predict(program, params).total_ns)


__all__ = [
    "OpCost",
    "OpTime",
    "PerfModelError",
    "PerfParams",
    "Prediction",
    "ProgramCost",
    "get_params",
    "known_chips",
    "modeled_ns",
    "predict",
    "program_cost",
    "read_params_file",
]
