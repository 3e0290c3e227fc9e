"""Public figures per chip, used to derive uncalibrated parameters from the fitted M4 Max.

Only the M4 Max has measurements. For every other part the fitted parameters are scaled:
- compute roof and on-chip bandwidth by the rated fp16 TFLOPS ratio (clock x cores);
- DRAM bandwidth by the rated ratio too (the ANE's own fabric), capped at
  :data:`MEMORY_SHARE` of the SoC's memory bandwidth;
- the INT8 factor kept on M4 and later (whose rated TOPS are INT8 figures), 1.0 before;
- SRAM capacity, dispatch and per-op costs kept as fitted (assumed the same everywhere).
Every derived entry is marked ``"calibrated": false`` in ``params.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from anetrain.perfmodel.params import PerfParams

REFERENCE_CHIP = "m4max"
MEMORY_SHARE = 0.8  # assumed: the most of the SoC memory bandwidth one engine can draw


@dataclass(frozen=True)
class ChipSpec:
    rated_fp16_tflops: float  # Apple's rated Neural Engine peak, as fp16
    memory_gbps: float  # SoC memory bandwidth
    int8_fast: bool  # INT8 runs faster than fp16 (the M4 generation's rated TOPS are INT8)


# Rated TOPS: M1 11, M2 15.8, M3 18 (fp16 figures); M4 38 is INT8, so fp16 = 19; Ultra = 2 dies.
# M5 has no figure in the reference files: assumed equal to the M4. Memory bandwidth: Apple's
# published figures for the top configuration of each part; M4 Ultra and M5 Pro/Max/Ultra have
# no such figure and are assumed (2x M4 Max; same as the M4 parts).
SPECS: dict[str, ChipSpec] = {
    "m1": ChipSpec(11.0, 68.25, False),
    "m1pro": ChipSpec(11.0, 200.0, False),
    "m1max": ChipSpec(11.0, 400.0, False),
    "m1ultra": ChipSpec(22.0, 800.0, False),
    "m2": ChipSpec(15.8, 100.0, False),
    "m2pro": ChipSpec(15.8, 200.0, False),
    "m2max": ChipSpec(15.8, 400.0, False),
    "m2ultra": ChipSpec(31.6, 800.0, False),
    "m3": ChipSpec(18.0, 100.0, False),
    "m3pro": ChipSpec(18.0, 150.0, False),
    "m3max": ChipSpec(18.0, 400.0, False),
    "m3ultra": ChipSpec(36.0, 819.0, False),
    "m4": ChipSpec(19.0, 120.0, True),
    "m4pro": ChipSpec(19.0, 273.0, True),
    "m4max": ChipSpec(19.0, 546.0, True),
    "m4ultra": ChipSpec(38.0, 1092.0, True),
    "m5": ChipSpec(19.0, 153.0, True),
    "m5pro": ChipSpec(19.0, 273.0, True),
    "m5max": ChipSpec(19.0, 546.0, True),
    "m5ultra": ChipSpec(38.0, 1092.0, True),
}


def derive(chip: str, fitted: PerfParams) -> PerfParams:
    """Uncalibrated parameters for ``chip``, scaled from the fitted reference chip."""
    spec, ref = SPECS[chip], SPECS[REFERENCE_CHIP]
    compute = spec.rated_fp16_tflops / ref.rated_fp16_tflops
    return replace(
        fitted,
        chip=chip,
        peak_tflops=round(fitted.peak_tflops * compute, 3),
        rated_fp16_tflops=spec.rated_fp16_tflops,
        int8_factor=fitted.int8_factor if spec.int8_fast else 1.0,
        sram_gbps=round(fitted.sram_gbps * compute, 1),
        dram_gbps=round(min(fitted.dram_gbps * compute, MEMORY_SHARE * spec.memory_gbps), 1),
        calibrated=False,
        source=(
            f"uncalibrated: {REFERENCE_CHIP} fit scaled by rated fp16 TFLOPS "
            f"({spec.rated_fp16_tflops:g}/{ref.rated_fp16_tflops:g}), DRAM capped at "
            f"{MEMORY_SHARE:g} x {spec.memory_gbps:g} GB/s"
        ),
    )
