"""The 1x1-conv sweeps: ``inmem_peak`` (chains), ``inmem_bench``, ``sram_bench``, ``sram_probe``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anetrain.bench import configs, tables
from anetrain.bench.result import PlotSpec, Series, SuiteResult, r
from anetrain.bench.runner import Runner, Timing
from anetrain.kernels import probes
from anetrain.perfmodel.reference import load_reference

Emit = Callable[[str], None]
REFERENCE_CHIP = "m4max"

# original (warmup, iters) per program on the ANE
PEAK_ITERS = (10, 50)
INMEM_ITERS = (5, 50)
SRAM_ITERS = (5, 30)
SRAM_FINE_ITERS = (5, 50)


def _tf(gf: float, t: Timing) -> float:
    return configs.tflops(gf, t.ms) if t.ms else 0.0


def _reference_series(runner: Runner, section: str) -> list[Series]:
    """The measured M4 Max points, when the chip is the M4 Max (for the plot only)."""
    if runner.chip.name != REFERENCE_CHIP:
        return []
    sec = load_reference()[section]
    cols = sec["columns"]
    xs = [row[cols.index("w_mb")] for row in sec["rows"]]
    ys = [row[cols.index("tflops")] for row in sec["rows"]]
    return [Series("measured M4 Max (reference)", xs, ys, "x")]


def _tflops_plot(
    runner: Runner, title: str, xs: list[float], ys: list[float], ref: str
) -> PlotSpec:
    what = "measured ANE" if runner.kind == "ane" else "modeled ANE"
    series = [Series(f"{what} ({runner.chip.display})", xs, ys), *_reference_series(runner, ref)]
    vline = None
    if runner.params is not None:
        vline = (runner.params.sram_mib, f"SRAM capacity (model, {runner.params.sram_mib:g} MiB)")
    return PlotSpec(title, "weights (MiB)", "TFLOPS", series, vline=vline, logx=True)


def run_peak(runner: Runner, emit: Emit) -> SuiteResult:
    """``inmem_peak``: chains of 1x1 convs, with %peak of the chip's rated fp16 TFLOPS."""
    it = runner.iterations(PEAK_ITERS)
    for line in tables.peak_header(runner.extra):
        emit(line)
    rows, xs, ys = [], [], []
    for ch, sp, depth in configs.PEAK_CONFIGS:
        w, gf = configs.weight_mb(ch, depth), configs.gflop(ch, sp, depth)
        label = tables.peak_label(ch, sp, depth)
        t = runner.measure(probes.conv_chain(ch, sp, depth, target=runner.target), label, it)
        tf = _tf(gf, t)
        pct = configs.pct_peak(tf, runner.rated_tflops)
        emit(tables.peak_row(label, w, gf, t, tf, pct, runner.extra))
        rows.append(
            {
                "depth": depth,
                "channels": ch,
                "spatial": sp,
                "weight_mb": r(w, 2),
                "gflops": r(gf),
                "tflops": r(tf, 2) if t.ms else None,
                "pct_peak": r(pct, 1) if t.ms else None,
                **t.to_dict(),
            }
        )
        if t.ms:
            xs.append(w)
            ys.append(tf)
    emit("")
    for line in runner.notes(it):
        emit(line)
    emit(
        f"%peak: percent of the {runner.rated_tflops:g} TFLOPS rated fp16 peak of "
        f"{runner.chip.display}"
    )
    summary = {"peak_tflops": r(max(ys), 2) if ys else None}
    plot = _tflops_plot(runner, "Conv-chain throughput vs weight size", xs, ys, "peak_conv_chain")
    return SuiteResult("inmem_peak", rows, summary, plot)


def run_inmem(runner: Runner, emit: Emit) -> SuiteResult:
    """``inmem_bench``: one conv with fp32 I/O, 256..4096 channels at spatial 64."""
    it = runner.iterations(INMEM_ITERS)
    for line in tables.inmem_header(runner.extra):
        emit(line)
    rows, xs, ys = [], [], []
    for ch, sp in configs.INMEM_CONFIGS:
        w, gf = configs.weight_mb(ch), configs.gflop(ch, sp)
        t = runner.measure(probes.single_conv(ch, sp, target=runner.target), f"inmem_{ch}", it)
        tf = _tf(gf, t)
        emit(tables.inmem_row(ch, sp, w, t, tf, runner.extra))
        rows.append(
            {
                "channels": ch,
                "spatial": sp,
                "weight_mb": r(w, 2),
                "gflops": r(gf, 4),
                "tflops": r(tf, 2) if t.ms else None,
                **t.to_dict(),
            }
        )
        if t.ms:
            xs.append(w)
            ys.append(tf)
    emit("")
    for line in runner.notes(it):
        emit(line)
    plot = _tflops_plot(
        runner, "Single conv throughput vs weight size", xs, ys, "single_conv_inmem"
    )
    return SuiteResult("inmem_bench", rows, {}, plot)


def run_sram(runner: Runner, emit: Emit, fine: bool = False) -> SuiteResult:
    """``sram_bench`` (coarse, 9 sizes) or ``sram_probe`` (fine, 13 sizes, spill marks)."""
    it = runner.iterations(SRAM_FINE_ITERS if fine else SRAM_ITERS)
    header = tables.sram_fine_header if fine else tables.sram_header
    for line in header(runner.extra):
        emit(line)
    rows: list[dict[str, Any]] = []
    xs: list[float] = []
    ys: list[float] = []
    spill_start = None
    for i, (ch, sp) in enumerate(configs.SRAM_FINE_CONFIGS if fine else configs.SRAM_CONFIGS):
        w, gf, act = configs.weight_mb(ch), configs.gflop(ch, sp), configs.act_mb(ch, sp)
        t = runner.measure(probes.single_conv(ch, sp, target=runner.target), f"sram_{ch}", it)
        tf = _tf(gf, t)
        eff = configs.gflops_per_mb(tf, w)
        spill = t.ms is not None and configs.spilling(i, eff)
        if spill and spill_start is None:
            spill_start = ch
        row: dict[str, Any] = {"channels": ch, "spatial": sp, "weight_mb": r(w, 2)}
        if fine:
            emit(tables.sram_fine_row(ch, w, t, tf, eff, spill, runner.extra))
            row |= {"gflops_per_mb": r(eff, 1) if t.ms else None, "spilling": spill}
        else:
            emit(tables.sram_row(ch, sp, w, act, t, tf, runner.extra))
            row |= {"act_mb": r(act, 3), "tot_mb": r(w + 2 * act, 2)}
        rows.append({**row, "tflops": r(tf, 2) if t.ms else None, **t.to_dict()})
        if t.ms:
            xs.append(w)
            ys.append(tf)
    if not fine:
        emit("")
        emit(tables.SRAM_FOOTER)
    emit("")
    for line in runner.notes(it):
        emit(line)
    plot = _tflops_plot(
        runner, "SRAM probe: throughput vs weight size", xs, ys, "sram_coarse_probe"
    )
    if not fine:
        return SuiteResult("sram_bench", rows, {}, plot)
    effs = [row["gflops_per_mb"] for row in rows if row["gflops_per_mb"] is not None]
    summary = {
        "sram_spill_start_channels": spill_start,
        "sram_peak_efficiency_gflops_per_mb": max(effs) if effs else None,
    }
    return SuiteResult("sram_probe", rows, summary, plot)
