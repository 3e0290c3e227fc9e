"""A calibrated per-chip performance model of the Neural Engine (see docs/perfmodel.md).

    from anetrain import perfmodel
    p = perfmodel.predict(program, perfmodel.get_params("m4max"))
    p.ms, p.tflops, p.bound()        # modeled eval time, throughput, limiting roof

The model prices the bytes each op really moves (:mod:`.costs`, :mod:`.roofline`): weights
stay on chip between evaluations up to the chip profile's SRAM and the rest stream from DRAM,
activations stay on chip, I/O crosses DRAM; FLOPs run at the rated fp16 (or INT8) roof; each
machine has its dispatch and eval floor. Parameters live in ``params.json``: the M4 Max and M4
are fitted to measured tables (cross-validated in docs/perfmodel.md), others derived.
"""

from __future__ import annotations

from anetrain.hardware.chips import ChipProfile
from anetrain.mil.ir import Program
from anetrain.perfmodel.costs import OpCost, ProgramCost, program_cost
from anetrain.perfmodel.params import (
    PerfModelError,
    PerfParams,
    get_params,
    known_chips,
    read_params_file,
    read_profile,
)
from anetrain.perfmodel.roofline import OpTime, Prediction, compile_load_ms, predict


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
    "compile_load_ms",
    "get_params",
    "known_chips",
    "modeled_ns",
    "predict",
    "program_cost",
    "read_params_file",
    "read_profile",
]
