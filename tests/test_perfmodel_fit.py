"""The fit: the generating script, cross-validated out-of-sample errors as docs/perfmodel.md
states them, and physical consistency (no implied DRAM bandwidth above the chip's, no
parameter at a bound of its range without a note)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from anetrain.perfmodel import fit as fitting
from anetrain.perfmodel import get_params
from anetrain.perfmodel.reference import reference_rows
from anetrain.perfmodel.report import BEGIN, BOUND_NOTES, END, all_params, cross_chip

ROOT = Path(__file__).resolve().parents[1]
OUT_OF_SAMPLE_MEDIAN_MAX = 20.0  # the target on the M4 Max reference tables (docs/perfmodel.md)
M4MAX_TABLES = ("peak_conv_chain", "single_conv_inmem", "sram_coarse_probe", "int8_w8a8_m4")
ROWS = reference_rows()


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "fit_perfmodel", ROOT / "scripts" / "fit_perfmodel.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result() -> fitting.FitResult:
    return fitting.fit(ROWS)


@pytest.fixture(scope="module")
def folds() -> list[fitting.HeldOut]:
    return fitting.cross_validate(ROWS)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("fit")
    params, docs = out / "params.json", out / "perfmodel.md"
    docs.write_text(f"# intro\n\n{BEGIN}\nstale\n{END}\n\ntail\n", encoding="utf-8")
    assert _script().main(["--out", str(params), "--docs", str(docs)]) == 0
    return params, docs


def test_script_writes_parameters_for_every_chip(fitted: tuple[Path, Path]) -> None:
    doc = json.loads(fitted[0].read_text())
    assert doc["generated_by"] == "python scripts/fit_perfmodel.py"
    assert {k for k, v in doc["chips"].items() if v["calibrated"]} == {"m4max", "m4"}
    assert all("sram_mib" not in v for v in doc["chips"].values())  # the profile's, not ours
    text = fitted[1].read_text()
    assert text.startswith("# intro") and text.rstrip().endswith("tail")
    assert "stale" not in text and text.count(BEGIN) == 1
    assert "| peak_conv_chain | m4max | 128x conv 512ch sp64 |" in text


def test_out_of_sample_error_on_the_reference_tables(folds: list[fitting.HeldOut]) -> None:
    by_group = {f.group: f for f in folds}
    assert set(by_group) == {r.group for r in ROWS}
    for group in M4MAX_TABLES:
        assert by_group[group].metrics.median_abs_pct <= OUT_OF_SAMPLE_MEDIAN_MAX, group
    # every fold predicts only rows it was not fitted to
    for f in folds:
        assert {e.group for e in f.errors} == {f.group}


def test_cross_chip_peaks_are_predicted_without_fitting_them(result: fitting.FitResult) -> None:
    checks = cross_chip(result)
    assert {c.row.chip for c in checks} == {"m3pro", "m4pro", "m5"}
    assert sorted(abs(c.pct) for c in checks)[len(checks) // 2] <= OUT_OF_SAMPLE_MEDIAN_MAX
    assert all(abs(c.pct) <= 30 for c in checks)


def test_no_implied_dram_bandwidth_above_the_chips(result: fitting.FitResult) -> None:
    """The bytes the model says cross DRAM, moved in the measured time, fit the SoC."""
    params = all_params(result)
    for e in result.errors:
        assert e.implied_dram_gbps <= params[e.chip].memory_gbps, e
    for c in cross_chip(result):
        assert c.dram_gbps_implied <= c.memory_gbps, c.row
    for p in params.values():
        assert p.dram_gbps <= p.memory_gbps


def test_the_bandwidth_check_catches_weights_streamed_every_evaluation(
    result: fitting.FitResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above can fail: with no SRAM to keep weights on chip, every evaluation streams
    them from DRAM, and the M5's and M3 Pro's measured peaks would need more bandwidth than
    those SoCs have (the physically impossible mechanism this model replaced)."""
    import dataclasses

    from anetrain.perfmodel import report

    real = report.get_chip
    monkeypatch.setattr(
        report, "get_chip", lambda name: dataclasses.replace(real(name), sram_bytes=1)
    )
    over = {c.row.chip for c in cross_chip(result) if c.dram_gbps_implied > c.memory_gbps}
    assert over >= {"m5", "m3pro"}


def test_every_parameter_at_a_bound_has_a_note(
    result: fitting.FitResult, folds: list[fitting.HeldOut]
) -> None:
    docs = (ROOT / "docs" / "perfmodel.md").read_text()
    for name in {n.split("[")[0] for n in result.at_bound}:
        assert name in BOUND_NOTES, f"{name} ends at a bound of its range without a note"
        assert BOUND_NOTES[name] in docs
    assert "NO NOTE" not in docs


def test_numpy_fallback_finds_an_equally_good_fit(result: fitting.FitResult) -> None:
    numpy_fit = fitting.fit(ROWS, use_scipy=False)
    assert numpy_fit.method == "numpy"
    assert numpy_fit.metrics.rms_log == pytest.approx(result.metrics.rms_log, abs=0.01)


def test_packaged_parameters_and_docs_are_current(result: fitting.FitResult) -> None:
    """params.json and docs/perfmodel.md were regenerated after the last model change."""
    packaged = {c: get_params(c) for c in result.params}
    packaged_rms = fitting.metrics(fitting.score(ROWS, packaged)).rms_log
    assert packaged_rms <= result.metrics.rms_log + 0.01
    docs = (ROOT / "docs" / "perfmodel.md").read_text()
    assert f"{result.metrics.rms_log:.3f}" in docs
