# ruff: noqa: UP031  (the printf formats are the original C programs', kept verbatim)
"""Table lines in the original programs' printf formats.

Each row gets one extra trailing cell the original did not have: on the simulator the host
time of the simulated eval ("host ms", labelled, not ANE time); on the ANE the perf model's
prediction ("model ms"). ``extra`` is "host", "model" or None (no trailing column).
"""

from __future__ import annotations

from anetrain.bench.runner import Timing

EXTRA_HEADER = {"host": "host ms", "model": "model ms"}
SPILL_MARK = " <-- spilling?"


def extra_header(extra: str | None) -> str:
    return "" if extra is None else f"  {EXTRA_HEADER[extra]:>11s}"


def extra_cell(t: Timing, extra: str | None) -> str:
    if extra is None:
        return ""
    value = t.host_ms if extra == "host" else t.modeled_ms
    if extra == "host" and t.error is not None:
        return f"  FAIL({_short(t.error)})"
    return f"  {value:8.3f} ms" if value is not None else f"  {'-':>11s}"


def fail(t: Timing) -> str:
    return f"FAIL({_short(t.error or 'no time')})"


def _short(error: str) -> str:
    """``stage: ErrorType`` of a long error (the footer lists the whole message)."""
    return error if len(error) <= 40 else ":".join(error.split(":")[:2])


# ---- inmem_peak --------------------------------------------------------------------------

PEAK_TITLE = "=== Programmatic MIL → In-Memory ANE Peak ==="


def peak_header(extra: str | None) -> list[str]:
    cols = "%-28s %7s %7s %9s %7s %6s" % ("Config", "W(MB)", "GFLOP", "ms/eval", "TFLOPS", "%peak")
    return [PEAK_TITLE, "", cols + extra_header(extra), "-" * 70]


def peak_label(ch: int, sp: int, depth: int) -> str:
    return f"{depth}x conv {ch}ch sp{sp}"


def peak_row(
    label: str, w: float, gf: float, t: Timing, tf: float, pct: float, extra: str | None
) -> str:
    if t.ms is None:
        return "%-28s %6.1f  %6.2f  %s" % (label, w, gf, fail(t))
    row = "%-28s %6.1f  %6.2f  %7.3f ms %6.2f  %5.1f%%" % (label, w, gf, t.ms, tf, pct)
    return row + extra_cell(t, extra)


# ---- inmem_bench -------------------------------------------------------------------------

INMEM_TITLE = "=== In-Memory ANE Benchmark ==="


def inmem_header(extra: str | None) -> list[str]:
    cols = "%-12s %8s %10s %8s" % ("Config", "W (MB)", "ms/eval", "TFLOPS")
    return [INMEM_TITLE, "", cols + extra_header(extra), "-" * 45]


def inmem_row(ch: int, sp: int, w: float, t: Timing, tf: float, extra: str | None) -> str:
    if t.ms is None:
        return "%4dch x%2dsp %7.1f  %s" % (ch, sp, w, fail(t))
    return "%4dch x%2dsp %7.1f  %8.3f ms %7.2f" % (ch, sp, w, t.ms, tf) + extra_cell(t, extra)


# ---- sram_bench (coarse) -----------------------------------------------------------------

SRAM_TITLE = "=== ANE SRAM Probe: 1x1 Conv with Increasing Weight Size ==="
SRAM_FOOTER = "Look for the performance cliff to estimate SRAM size."


def sram_header(extra: str | None) -> list[str]:
    cols = "%-25s %8s %8s %8s %10s %8s" % (
        "Config", "W (MB)", "Act(MB)", "Tot(MB)", "ms/eval", "TFLOPS",
    )  # fmt: skip
    return [SRAM_TITLE, "", cols + extra_header(extra), "-" * 74]


def sram_row(
    ch: int, sp: int, w: float, act: float, t: Timing, tf: float, extra: str | None
) -> str:
    label, tot = f"{ch}ch x {sp}sp", w + 2 * act
    if t.ms is None:
        return "%-25s %7.1f  %7.2f  %7.1f  %s" % (label, w, act, tot, fail(t))
    row = "%-25s %7.1f  %7.2f  %7.1f  %8.3f ms %7.2f" % (label, w, act, tot, t.ms, tf)
    return row + extra_cell(t, extra)


# ---- sram_probe (fine) -------------------------------------------------------------------

SRAM_FINE_TITLE = "=== ANE SRAM Fine Probe (weights only vary, spatial=64) ==="


def sram_fine_header(extra: str | None) -> list[str]:
    cols = "%-12s %8s %10s %8s %12s" % ("Channels", "W (MB)", "ms/eval", "TFLOPS", "GFLOPS/MB")
    return [SRAM_FINE_TITLE, "", cols + extra_header(extra), "-" * 62]


def sram_fine_row(
    ch: int, w: float, t: Timing, tf: float, eff: float, spill: bool, extra: str | None
) -> str:
    if t.ms is None:
        return "%6d ch   %7.1f  %s" % (ch, w, fail(t))
    row = "%6d ch   %7.1f  %8.3f ms %7.2f  %10.1f" % (ch, w, t.ms, tf, eff)
    return row + extra_cell(t, extra) + (SPILL_MARK if spill else "")


# ---- ane_int8_bench ----------------------------------------------------------------------


def int8_header(chip: str, subtype: str, extra: str | None) -> list[str]:
    cols = "%-30s %7s %7s %9s %7s %7s" % ("Config", "W(MB)", "GOP", "ms/eval", "TOPS", "Ratio")
    title = f"=== ANE INT8 W8A8 Benchmark ({chip}, {subtype}) ==="
    return [title, "", cols + extra_header(extra), "-" * 80]


def int8_label(ch: int, sp: int, depth: int) -> str:
    return f"{depth}x conv {ch}ch {sp}x{sp}"


def int8_rows(
    label: str,
    gop: float,
    w16: float,
    w8: float,
    fp16: Timing,
    int8: Timing,
    extra: str | None,
) -> list[str]:
    if fp16.ms is None or int8.ms is None:
        a = -1.0 if fp16.ms is None else fp16.ms
        b = -1.0 if int8.ms is None else int8.ms
        return ["  %s: FP16=%.1f INT8=%.1f (FAIL)" % (label, a, b)]
    ratio = fp16.ms / int8.ms
    r16 = "FP16 %-25s %6.1f  %6.2f  %7.3f ms %6.2f" % (label, w16, gop, fp16.ms, gop / fp16.ms)
    r8 = "W8A8 %-25s %6.1f  %6.2f  %7.3f ms %6.2f  %.2fx" % (
        label, w8, gop, int8.ms, gop / int8.ms, ratio,
    )  # fmt: skip
    pad = " " * (len(r8) - len(r16)) if extra else ""  # keep the extra column aligned
    return [r16 + pad + extra_cell(fp16, extra), r8 + extra_cell(int8, extra), ""]


INT8_FOOTER = "=== Done ==="


# ---- dispatch latency (new) --------------------------------------------------------------

DISPATCH_TITLE = "=== ANE Dispatch Latency: eval time vs kernel size ==="


def dispatch_header(extra: str | None) -> list[str]:
    cols = "%-14s %8s %9s %8s %10s %8s" % (
        "Config", "W (MB)", "I/O (KB)", "GFLOP", "ms/eval", "GFLOPS",
    )  # fmt: skip
    return [DISPATCH_TITLE, "", cols + extra_header(extra), "-" * 62]


def dispatch_row(
    ch: int, sp: int, w: float, io_kb: float, gf: float, t: Timing, extra: str | None
) -> str:
    label = f"{ch}ch x {sp}sp"
    if t.ms is None:
        return "%-14s %8.3f %9.1f %8.4f  %s" % (label, w, io_kb, gf, fail(t))
    row = "%-14s %8.3f %9.1f %8.4f %7.3f ms %8.1f" % (label, w, io_kb, gf, t.ms, gf / t.ms * 1e3)
    return row + extra_cell(t, extra)


# ---- test_qos_sweep ----------------------------------------------------------------------

QOS_TITLE = "=== QoS Sweep: compile/load/eval with QoS 0-63 ==="


def qos_header(ch: int, sp: int, iters: int) -> list[str]:
    kernel = "Kernel: %dx%d conv, spatial=%d (%.1f MFLOPS)" % (ch, ch, sp, 2.0 * ch * ch * sp / 1e6)
    cols = "%4s %10s %10s %10s %10s  %s" % (
        "QoS", "Compile", "Load", "Eval(1)", f"Eval(avg{iters})", "Status",
    )  # fmt: skip
    return [QOS_TITLE, kernel, cols + "  " + EXTRA_HEADER["model"]]


def qos_row(
    qos: int,
    compile_ms: float | None,
    load_ms: float | None,
    eval1_ms: float | None,
    avg_ms: float | None,
    status: str,
    modeled_ms: float | None,
) -> str:
    def ms(v: float | None, prec: int) -> str:
        return f"{v:8.{prec}f}ms" if v is not None else f"{'-':>10s}"

    cells = (ms(compile_ms, 1), ms(load_ms, 1), ms(eval1_ms, 2), ms(avg_ms, 2))
    model = f"{modeled_ms:8.3f} ms" if modeled_ms is not None else "-"
    return "%4u %s %s %s %s  %s  %s" % (qos, *cells, status, model)
