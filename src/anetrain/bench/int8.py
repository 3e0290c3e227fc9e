"""``ane_int8_bench``: FP16 vs W8A8 conv chains on a ``[1, ch, 64, 64]`` input.

The FP16 chain is :func:`probes.conv_chain` on ``[1, ch, 1, 64*64]``: for 1x1 convs that is
the same computation, FLOPs and bytes as the original's ``[1, ch, 64, 64]``. These programs
are large (a 128-deep 512-channel chain is 275 GFLOP per eval), so the simulator defaults to
one timed eval and no warmup.
"""

from __future__ import annotations

from collections.abc import Callable

from anetrain.bench import configs, tables
from anetrain.bench.result import PlotSpec, Series, SuiteResult, r
from anetrain.bench.runner import Runner
from anetrain.kernels import probes

INT8_ITERS = (10, 50)
INT8_SIM_ITERS = (0, 1)


def run_int8(runner: Runner, emit: Callable[[str], None]) -> SuiteResult:
    it = runner.iterations(INT8_ITERS, sim=INT8_SIM_ITERS)
    for line in tables.int8_header(runner.chip.display, runner.chip.arch, runner.extra):
        emit(line)
    rows, w16s, t16s, t8s = [], [], [], []
    for ch, sp, depth in configs.INT8_CONFIGS:
        gop = configs.gop_spatial(ch, sp, depth)
        w16, w8 = configs.weight_mb(ch, depth), configs.weight_mb(ch, depth, bytes_per_weight=1)
        label = tables.int8_label(ch, sp, depth)
        fp16 = runner.measure(
            probes.conv_chain(ch, sp * sp, depth, target=runner.target), f"fp16 {label}", it
        )
        int8 = runner.measure(
            probes.int8_chain(ch, sp, depth, target=runner.target), f"w8a8 {label}", it
        )
        for line in tables.int8_rows(label, gop, w16, w8, fp16, int8, runner.extra):
            emit(line)
        ok = fp16.ms is not None and int8.ms is not None
        rows.append(
            {
                "depth": depth,
                "channels": ch,
                "spatial": sp,
                "gop": r(gop, 2),
                "fp16_weight_mb": r(w16, 2),
                "int8_weight_mb": r(w8, 2),
                "fp16_ms": r(fp16.ms),
                "int8_ms": r(int8.ms),
                "fp16_tops": r(gop / fp16.ms, 2) if fp16.ms else None,
                "int8_tops": r(gop / int8.ms, 2) if int8.ms else None,
                "speedup": r(fp16.ms / int8.ms, 2) if ok else None,  # type: ignore[operator]
                "fp16": fp16.to_dict(),
                "int8": int8.to_dict(),
            }
        )
        if ok:
            w16s.append(w16)
            t16s.append(gop / fp16.ms)  # type: ignore[operator]
            t8s.append(gop / int8.ms)  # type: ignore[operator]
    emit(tables.INT8_FOOTER)
    emit("")
    for line in runner.notes(it):
        emit(line)
    speedups = [row["speedup"] for row in rows if row["speedup"] is not None]
    summary = {"int8_speedup_max": max(speedups) if speedups else None}
    plot = PlotSpec(
        "FP16 vs W8A8 conv chains ([1, ch, 64, 64])",
        "fp16 weights (MiB)",
        "TOPS",
        [Series("FP16", w16s, t16s, "o"), Series("W8A8", w16s, t8s, "s")],
    )
    return SuiteResult("int8_w8a8", rows, summary, plot)
