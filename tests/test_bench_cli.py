"""``anetrain bench`` end to end on the simulator with tiny configurations, and the JSON schema."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from anetrain.bench import configs, report
from anetrain.cli import main

SIM = ["--backend", "sim", "--chip", "m4max"]


@pytest.fixture(autouse=True)
def tiny_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(configs, "PEAK_CONFIGS", ((64, 16, 2), (64, 16, 4)))
    monkeypatch.setattr(configs, "INMEM_CONFIGS", ((64, 16), (128, 16)))
    monkeypatch.setattr(configs, "SRAM_CONFIGS", ((64, 16), (128, 8)))
    monkeypatch.setattr(configs, "SRAM_FINE_CONFIGS", ((64, 16), (96, 16), (128, 8)))
    monkeypatch.setattr(configs, "INT8_CONFIGS", ((32, 4, 2),))
    monkeypatch.setattr(configs, "DISPATCH_CONFIGS", ((16, 16), (64, 16)))
    monkeypatch.setattr(configs, "QOS_VALUES", (0, 21))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["bench", *argv]) == 0
    return capsys.readouterr().out


def _load(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    assert report.validate(doc) == []
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, report.SCHEMA)
    return doc


def test_peak_on_sim_writes_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    out = _run(
        capsys, "peak", *SIM, "--json", str(tmp_path / "p.json"), "--plot", str(tmp_path / "p.png")
    )
    assert "=== Programmatic MIL → In-Memory ANE Peak ===" in out
    assert "host ms" in out and "modeled ANE time per eval on Apple M4 Max" in out
    assert "2x conv 64ch sp16" in out and "4x conv 64ch sp16" in out
    doc = _load(tmp_path / "p.json")
    rows = doc["benchmarks"]["inmem_peak"]
    assert [r["depth"] for r in rows] == [2, 4]
    assert all(r["status"] == "OK" and r["host_ms_per_eval"] > 0 for r in rows)
    assert rows[0]["ms_per_eval"] == rows[0]["modeled_ms_per_eval"]
    assert rows[0]["gflops"] == pytest.approx(configs.gflop(64, 16, 2), abs=1e-3)
    assert rows[1]["pct_peak"] == pytest.approx(100 * rows[1]["tflops"] / 19.0, abs=0.2)
    assert doc["system"]["chip"] == "Apple M4 Max (modeled)"
    assert doc["anetrain"]["times"] == "modeled" and doc["anetrain"]["backend"] == "sim"
    assert doc["summary"]["peak_tflops"] == max(r["tflops"] for r in rows)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_json_records_the_command_line_as_typed(tmp_path: Path) -> None:
    # it once carried the parser's own bookkeeping: "anetrain bench peak --argv ['bench', ...]"
    path = tmp_path / "with space" / "p.json"
    argv = ["bench", "peak", "--model-only", "--chip", "m1", "--json", str(path)]
    assert main(argv) == 0
    command = _load(path)["anetrain"]["command"]
    assert shlex.split(command) == ["anetrain", *argv]


def test_sram_fine_and_coarse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "sram", "--fine", *SIM, "--iters", "1", "--json", str(tmp_path / "s.json"))
    assert "=== ANE SRAM Fine Probe (weights only vary, spatial=64) ===" in out
    doc = _load(tmp_path / "s.json")
    rows = doc["benchmarks"]["sram_probe"]
    assert [r["channels"] for r in rows] == [64, 96, 128]
    assert "sram_spill_start_channels" in doc["summary"]
    assert "mean of 1 evals after 1 warmup" in out
    out = _run(capsys, "sram", *SIM)
    assert "Look for the performance cliff to estimate SRAM size." in out


def test_inmem_int8_dispatch_qos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "=== In-Memory ANE Benchmark ===" in _run(capsys, "inmem", *SIM)
    out = _run(capsys, "int8", *SIM, "--json", str(tmp_path / "i.json"))
    assert "FP16 2x conv 32ch 4x4" in out and "W8A8 2x conv 32ch 4x4" in out
    row = _load(tmp_path / "i.json")["benchmarks"]["int8_w8a8"][0]
    assert row["speedup"] == pytest.approx(row["fp16_ms"] / row["int8_ms"], abs=0.01)
    out = _run(capsys, "dispatch", *SIM)
    assert "dispatch floor:" in out and "16ch x 16sp" in out
    out = _run(capsys, "qos", *SIM, "--json", str(tmp_path / "q.json"))
    assert "Eval(avg3)" in out and out.count("  OK  ") == 2
    assert [r["qos"] for r in _load(tmp_path / "q.json")["benchmarks"]["qos"]] == [0, 21]


def test_model_only_runs_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "peak", "--model-only", "--chip", "m1")
    assert "perf model, uncalibrated guess" in out and "host ms" not in out
    assert "--model-only" in out


def test_train_models_the_dynamic_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(
        capsys, "train", "--chip", "m4max", "--model", "tiny", "--json", str(tmp_path / "t.json")
    )
    assert "=== Modeled ANE time per training step: tiny on Apple M4 Max ===" in out
    doc = _load(tmp_path / "t.json")
    step = doc["benchmarks"]["training_dynamic_modeled"]
    assert len(step["kernels"]) == 10 and step["evals_per_step"] == 40
    per_layer = sum(k["modeled_ms_per_eval"] for k in step["kernels"])
    assert step["modeled_ms_per_step"] == pytest.approx(per_layer * 4, rel=1e-3)


def test_stories110m_step_sits_beside_the_measured_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = _run(capsys, "train", "--chip", "m4max", "--model", "stories110m")
    assert "62.9 ms/step" in out and "91.0 ms/step" in out and "120 evals per step" in out


def test_plot_without_matplotlib_fails_early_and_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["bench", "peak", *SIM, "--plot", str(tmp_path / "x.png")]) == 1
    captured = capsys.readouterr()
    assert "anetrain[plot]" in captured.err and "Programmatic" not in captured.out


def test_validate_reports_missing_fields() -> None:
    problems = report.validate(
        {"schema_version": 2, "system": {}, "benchmarks": {"inmem_peak": [{}]}}
    )
    assert "schema_version must be 1" in problems
    assert "missing system.chip" in problems and "missing top-level 'summary'" in problems
    assert any(p.startswith("benchmarks.inmem_peak[0] lacks depth") for p in problems)


@pytest.mark.parametrize(("extras", "count"), [((), 72), (("--ane-extras",), 99)])
def test_train_models_the_static_pipelines_like_the_original(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extras: tuple[str, ...], count: int
) -> None:
    """stories110m on the M4 Max: the original's kernel counts; its 'ANE ms' (forward kernels
    of one sequence) beside its measured 10-12 ms bucket; a compile share near its 80-85 %."""
    path = tmp_path / "s.json"
    args = ("train", "--pipeline", "static", *extras, "--chip", "m4max", "--json", str(path))
    out = _run(capsys, *args)
    assert f"Kernels: {count} (" in out and "Measured by the original project" in out
    doc = _load(path)
    name = "training_static_extras_modeled" if extras else "training_static_modeled"
    m = doc["benchmarks"][name]
    assert m["kernel_count"] == count and m["recompiled_per_batch"] == (86 if extras else 60)
    assert 5 < m["modeled_forward_ane_ms_per_sequence"] < 25
    fwd = sum(k["modeled_ms_per_sequence"] for k in m["kernels"] if k["forward"])
    assert m["modeled_forward_ane_ms_per_sequence"] == pytest.approx(fwd, rel=1e-3)
    assert m["modeled_ane_ms_per_sequence"] > m["modeled_forward_ane_ms_per_sequence"]
    assert m["batches_per_process"] == 1  # 72 + 60 > 119: every process trains one batch
    assert 70 < m["modeled_compile_pct_upper_bound"] < 99


def test_ane_extras_without_the_static_pipeline_is_refused(capsys) -> None:
    assert main(["bench", "train", "--ane-extras"]) == 1
    assert "--ane-extras needs --pipeline static" in capsys.readouterr().err
