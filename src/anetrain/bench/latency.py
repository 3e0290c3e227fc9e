"""Latency sweeps: eval time against kernel size (dispatch floor), and the 17-value QoS sweep
of ``test_qos_sweep`` (compile, load, first eval and mean eval per QoS value)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from anetrain.bench import configs, tables
from anetrain.bench.result import PlotSpec, Series, SuiteResult, r
from anetrain.bench.runner import Iterations, Runner
from anetrain.kernels import probes

Emit = Callable[[str], None]
DISPATCH_ITERS = (10, 100)
DISPATCH_SIM_ITERS = (2, 20)
QOS_ITERS = (0, 10)  # the original: one eval, then the mean of 10
QOS_SIM_ITERS = (0, 3)


def run_dispatch(runner: Runner, emit: Emit) -> SuiteResult:
    """One fp16 1x1 conv from 16x16 to 2048x64: small kernels sit on the dispatch floor."""
    it = runner.iterations(DISPATCH_ITERS, sim=DISPATCH_SIM_ITERS)
    for line in tables.dispatch_header(runner.extra):
        emit(line)
    rows, xs, ys = [], [], []
    for ch, sp in configs.DISPATCH_CONFIGS:
        w, gf = configs.weight_mb(ch), configs.gflop(ch, sp)
        io_kb = 2 * ch * sp * 2 / 1024  # fp16 input + output surfaces
        t = runner.measure(
            probes.conv_chain(ch, sp, 1, target=runner.target), f"dispatch_{ch}x{sp}", it
        )
        emit(tables.dispatch_row(ch, sp, w, io_kb, gf, t, runner.extra))
        rows.append(
            {
                "channels": ch,
                "spatial": sp,
                "weight_mb": r(w, 4),
                "io_kb": r(io_kb, 1),
                "gflops": r(gf, 5),
                **t.to_dict(),
            }
        )
        if t.ms:
            xs.append(w * 1024 + io_kb)
            ys.append(t.ms)
    emit("")
    floor = min(ys) if ys else None
    if floor is not None:
        emit(f"dispatch floor: {floor:.3f} ms per eval (fastest kernel)")
    if runner.params is not None:
        p = runner.params
        emit(
            f"model: {p.dispatch_us:.4g} us per eval + {p.per_op_us:.4g} us per op + roofline "
            f"time, never below the {p.floor_us:.4g} us floor"
        )
    for line in runner.notes(it):
        emit(line)
    what = "measured" if runner.kind == "ane" else "modeled"
    plot = PlotSpec(
        "Eval latency vs kernel size",
        "weights + I/O (KiB)",
        "ms per eval",
        [Series(f"{what} ANE ({runner.chip.display})", xs, ys)],
        logx=True,
    )
    return SuiteResult("dispatch", rows, {"dispatch_floor_ms": r(floor)}, plot)


@dataclass
class QosRow:
    qos: int
    modeled_ms: float | None
    compile_ms: float | None = None  # compile + load, as runtime.compile does both
    load_ms: float | None = None  # load again after unload
    eval1_ms: float | None = None
    eval_avg_ms: float | None = None
    status: str = "NOT_RUN"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: (r(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        out["modeled_ms_per_eval"] = out.pop("modeled_ms")
        if self.error is None:
            del out["error"]
        return out


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def _qos_row(runner: Runner, qos: int, it: Iterations) -> QosRow:
    ch, sp = configs.QOS_KERNEL
    model = probes.conv_chain(ch, sp, 1, target=runner.target)
    pred = runner.predict(model.program)
    row = QosRow(qos, pred.ms if pred else None)
    if not runner.runs:
        return row
    start = time.perf_counter()
    try:
        kernel = runner.compile(model, f"qos_{qos}", qos=qos)
    except Exception as err:  # report the failure in the table, like the original
        row.status, row.error = "COMPILE_FAIL", str(err)
        return row
    row.compile_ms = _ms_since(start)
    try:
        kernel.unload()
        start = time.perf_counter()
        kernel.load()
        row.load_ms = _ms_since(start)
        kernel.input.fill(0.5)
        row.status = "EVAL_FAIL"
        kernel.eval()
        row.eval1_ms = (kernel.stats.wall_ns or 0) / 1e6
        row.eval_avg_ms = runner.time_kernel(kernel, Iterations(0, it.iters))[0]
        row.status = "OK"
    except Exception as err:
        row.status = "LOAD_FAIL" if row.load_ms is None else "EVAL_FAIL"
        row.error = str(err)
    finally:
        kernel.unload()
    return row


def run_qos(runner: Runner, emit: Emit) -> SuiteResult:
    """Compile, load and evaluate a 256x256 conv at each of the 17 QoS values."""
    it = runner.iterations(QOS_ITERS, sim=QOS_SIM_ITERS)
    ch, sp = configs.QOS_KERNEL
    for line in tables.qos_header(ch, sp, it.iters):
        emit(line)
    rows = []
    for qos in configs.QOS_VALUES:
        row = _qos_row(runner, qos, it)
        rows.append(row)
        cells = (row.compile_ms, row.load_ms, row.eval1_ms, row.eval_avg_ms)
        emit(tables.qos_row(qos, *cells, row.status, row.modeled_ms))
    emit("")
    emit("Done.")
    where = "the ANE" if runner.kind == "ane" else "the simulator (host times, not ANE time)"
    emit(
        f"times: compile (includes load), reload, first and mean eval on {where}; "
        "model ms = perf model, which has no QoS term"
    )
    ok = [row for row in rows if row.eval_avg_ms is not None]
    xs, ys = [float(row.qos) for row in ok], [row.eval_avg_ms or 0.0 for row in ok]
    plot = PlotSpec("Eval latency vs QoS", "QoS", "mean ms per eval", [Series("eval", xs, ys)])
    summary = {"qos_all_ok": len(ok) == len(rows) if runner.runs else None}
    return SuiteResult("qos", [row.to_dict() for row in rows], summary, plot)
