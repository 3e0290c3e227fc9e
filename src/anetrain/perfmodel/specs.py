"""Public figures per chip, and how the parameters of chips without measurements are derived.

Measured (fitted): the M4 Max and the M4, which share one H16 Neural Engine; their fit gives
the engine's on-chip feed rates, per-op cost and the share of the SoC's memory bandwidth the
engine draws, and each machine's dispatch. Every other chip is derived:
- compute roof = the rated fp16 TFLOPS (reported; the INT8 bench's FP16 rows reach 98% of it,
  the M3 Pro's 2048-wide chain 93%), INT8 x2 on M4 and later (rated TOPS are INT8 figures);
- on-chip feed rates scaled by the rated fp16 ratio (assumed: clock x cores);
- DRAM = the fitted share of the chip's own SoC memory bandwidth (so never above it);
- dispatch, compile and load: reported per chip where a public figure exists, else the M4's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from anetrain.perfmodel.params import PerfParams

REFERENCE_CHIP = "m4max"
FITTED_CHIPS = ("m4max", "m4")  # chips with measured tables (one ANE generation)
ASSUMED_DISPATCH_FROM = "m4"  # chips without a dispatch figure take this fitted one


@dataclass(frozen=True)
class ChipSpec:
    rated_fp16_tflops: float  # Apple's rated Neural Engine peak, as fp16
    memory_gbps: float  # SoC memory bandwidth
    int8_fast: bool  # INT8 runs 2x fp16 (the M4 generation's rated TOPS are INT8 figures)
    dispatch_us: float | None = None  # reported eval floor of a small kernel, if any
    compile_ms: float = 40.0  # per kernel; reported on M4: 10 dynamic kernels in 0.35-0.4 s
    load_ms: float = 1.7  # per kernel; reported on M5 (maderix/ANE m5 probes)
    source: str = ""


_M5 = "dispatch: M5 evaluates a 256x256 sp64 conv in about 0.07 ms, compiles it in 11 ms, loads in 1.7 ms (maderix/ANE M5 probes)"  # noqa: E501
_M5PRO = "dispatch: ~70 us floor (ANEForge README, M5 Pro)"

# Rated TOPS: M1 11, M2 15.8, M3 18 (fp16 figures); M4 38 is INT8, so fp16 = 19; Ultra = 2 dies;
# M5: 19.27 TFLOPS fp16 measured on an M5 Max (maderix/ANE PR #50), taken as 19. Memory
# bandwidth: Apple's figures for the top configuration of each part; M4 Ultra and M5
# Pro/Max/Ultra have none and are assumed (2x M4 Max; same as the M4 parts).
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
    "m5": ChipSpec(19.0, 153.0, True, 70.0, 11.0, 1.7, _M5),
    "m5pro": ChipSpec(19.0, 273.0, True, 70.0, 11.0, 1.7, _M5PRO),
    "m5max": ChipSpec(19.0, 546.0, True, 70.0, 11.0, 1.7, "dispatch assumed as the M5/M5 Pro"),
    "m5ultra": ChipSpec(38.0, 1092.0, True, 70.0, 11.0, 1.7, "dispatch assumed as the M5/M5 Pro"),
}


@dataclass(frozen=True)
class EngineFit:
    """What the fit finds for the measured engine generation (shared by its chips)."""

    sram_gbps: float
    big_op_gbps: float  # capped at sram_gbps
    per_op_us: float
    dram_share: float  # dram_gbps / the SoC's memory_gbps
    dispatch_us: dict[str, float]  # per fitted machine
    floor_us: dict[str, float] = field(default_factory=dict)  # per fitted machine


def base_params(chip: str, engine: EngineFit) -> PerfParams:
    """Parameters of ``chip`` from the engine fit and its public figures."""
    spec, ref = SPECS[chip], SPECS[REFERENCE_CHIP]
    scale = spec.rated_fp16_tflops / ref.rated_fp16_tflops
    fitted = chip in engine.dispatch_us
    dispatch = engine.dispatch_us.get(chip, spec.dispatch_us)
    if dispatch is None:
        dispatch = engine.dispatch_us.get(ASSUMED_DISPATCH_FROM, 100.0)
    if fitted:
        source = "fitted to measured tables (docs/perfmodel.md)"
    else:
        source = (
            f"derived: engine fit scaled by rated fp16 ({spec.rated_fp16_tflops:g}/"
            f"{ref.rated_fp16_tflops:g}), DRAM {engine.dram_share:.3g} x {spec.memory_gbps:g} GB/s"
            + (
                f"; {spec.source}"
                if spec.source
                else f"; dispatch as fitted for {ASSUMED_DISPATCH_FROM}"
            )
        )
    dram = engine.dram_share * spec.memory_gbps
    sram = max(engine.sram_gbps * scale, dram)  # on chip is never slower than DRAM
    return PerfParams(
        chip=chip,
        peak_tflops=spec.rated_fp16_tflops,
        rated_fp16_tflops=spec.rated_fp16_tflops,
        int8_factor=2.0 if spec.int8_fast else 1.0,
        sram_gbps=sram,
        big_op_gbps=min(sram, engine.big_op_gbps * scale),
        dram_gbps=dram,
        memory_gbps=spec.memory_gbps,
        dispatch_us=dispatch,
        floor_us=engine.floor_us.get(chip, 0.0),
        per_op_us=engine.per_op_us,
        compile_ms=spec.compile_ms,
        load_ms=spec.load_ms,
        calibrated=fitted,
        source=source,
    )
