"""Table formatting in the original printf formats, with the corrected %peak arithmetic."""

from __future__ import annotations

import pytest

from anetrain.bench import configs, tables
from anetrain.bench.runner import Iterations, Runner, Timing


def test_peak_header_and_row_match_the_original_format() -> None:
    header = tables.peak_header(None)
    assert header[0] == "=== Programmatic MIL → In-Memory ANE Peak ==="
    assert header[2] == "Config                         W(MB)   GFLOP   ms/eval  TFLOPS  %peak"
    assert "%%peak" not in header[2]
    w, gf = configs.weight_mb(512, 128), configs.gflop(512, 64, 128)
    t = Timing(ms=0.385)
    tf = configs.tflops(gf, t.ms)
    pct = configs.pct_peak(tf, 19.0)
    row = tables.peak_row(tables.peak_label(512, 64, 128), w, gf, t, tf, pct, None)
    assert row == "128x conv 512ch sp64           64.0    4.29    0.385 ms  11.16   58.7%"


def test_pct_peak_uses_the_rated_tflops_not_0_019() -> None:
    assert configs.pct_peak(11.14, 19.0) == pytest.approx(58.63, abs=0.01)
    assert configs.pct_peak(9.5, 19.0) == pytest.approx(50.0)
    assert configs.pct_peak(11.14, 19.0) < 100  # the original printed ~58632%


def test_inmem_and_sram_rows() -> None:
    t = Timing(ms=0.254)
    gf = configs.gflop(2048, 64)
    row = tables.inmem_row(2048, 64, configs.weight_mb(2048), t, configs.tflops(gf, t.ms), None)
    assert row == "2048ch x64sp     8.0     0.254 ms    2.11"
    header = tables.inmem_header(None)
    assert header[2] == "Config         W (MB)    ms/eval   TFLOPS" and len(header[3]) == 45
    t = Timing(ms=1.116)
    gf = configs.gflop(4096, 64)
    row = tables.sram_row(
        4096, 64, configs.weight_mb(4096), configs.act_mb(4096, 64), t, gf / t.ms, None
    )
    assert row == "4096ch x 64sp                32.0     0.50     33.0     1.116 ms    1.92"


def test_sram_fine_spill_marks() -> None:
    assert not configs.spilling(0, 10.0)  # never the first row
    assert configs.spilling(1, 99.9) and not configs.spilling(1, 100.0)
    tf = configs.tflops(configs.gflop(4096, 64), 1.134)
    eff = configs.gflops_per_mb(tf, configs.weight_mb(4096))
    assert eff == pytest.approx(59.2, abs=0.05)
    row = tables.sram_fine_row(4096, 32.0, Timing(ms=1.134), tf, eff, True, None)
    assert row == "  4096 ch      32.0     1.134 ms    1.89        59.2 <-- spilling?"


def test_int8_rows_and_ratio() -> None:
    gop = configs.gop_spatial(512, 64, 128)
    w16, w8 = configs.weight_mb(512, 128), configs.weight_mb(512, 128, bytes_per_weight=1)
    lines = tables.int8_rows(
        tables.int8_label(512, 64, 128), gop, w16, w8, Timing(ms=14.8), Timing(ms=7.8), None
    )
    assert lines[0] == "FP16 128x conv 512ch 64x64       64.0  274.88   14.800 ms  18.57"
    assert lines[1] == "W8A8 128x conv 512ch 64x64       32.0  274.88    7.800 ms  35.24  1.90x"
    fail = tables.int8_rows(
        "x", gop, w16, w8, Timing(ms=None, error="compile: E"), Timing(ms=7.8), None
    )
    assert fail == ["  x: FP16=-1.0 INT8=7.8 (FAIL)"]


def test_extra_columns_label_host_and_model_times() -> None:
    t = Timing(ms=0.5, modeled_ms=0.5, host_ms=12.25)
    assert tables.extra_header("host").strip() == "host ms"
    assert tables.extra_cell(t, "host") == "    12.250 ms"
    assert tables.extra_cell(Timing(ms=0.3, modeled_ms=0.31), "model") == "     0.310 ms"
    failed = Timing(ms=0.5, modeled_ms=0.5, error="compile: AssertionError: " + "x" * 80)
    assert tables.extra_cell(failed, "host") == "  FAIL(compile: AssertionError)"


def test_qos_row_format() -> None:
    row = tables.qos_row(21, 11.8, 1.7, 0.18, 0.08, "OK", 0.312)
    assert row == "  21     11.8ms      1.7ms     0.18ms     0.08ms  OK     0.312 ms"
    assert tables.qos_header(256, 64, 10)[1] == "Kernel: 256x256 conv, spatial=64 (8.4 MFLOPS)"


def test_iterations_defaults() -> None:
    sim = Runner("sim", "m4max")
    assert sim.iterations((10, 50)) == Iterations(1, 3)
    assert sim.iterations((10, 50), sim=(0, 1)) == Iterations(0, 1)
    explicit = Runner("sim", "m4max", warmup=4, iters=7)
    assert explicit.iterations((10, 50)) == Iterations(4, 7)
    assert sim.rated_tflops == 19.0 and sim.kind == "model" and sim.extra == "host"
    assert Runner(chip="m4max", model_only=True).extra is None
