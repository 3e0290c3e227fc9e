"""Calibration from a user's own Mac, end to end on Linux: 'bench suite --json' on sim writes
the probe set with modeled times, 'perfmodel fit' recovers the parameters that produced it,
and '--chip-profile' changes the modeled times; plus 'mil check --chip --os' as a linter."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from anetrain import perfmodel, runtime
from anetrain.cli import main
from anetrain.kernels import probes
from anetrain.mil import FP16, Builder, print_program
from anetrain.perfmodel import get_params, predict, read_profile
from anetrain.perfmodel.params import clear_profiles, profile_document

# a made-up chip where every fitted parameter shapes some probe: small convs are feed-bound
KNOWN = dataclasses.replace(
    get_params("m4max"),
    sram_gbps=200.0,
    big_op_gbps=40.0,
    dram_gbps=150.0,
    per_op_us=0.5,
    dispatch_us=150.0,
    floor_us=400.0,
    source="test",
)


@pytest.fixture(autouse=True)
def _no_profiles() -> Iterator[None]:
    clear_profiles()
    yield
    clear_profiles()


def _profile(tmp_path: Path, params=KNOWN) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / "known.json"
    path.write_text(json.dumps(profile_document(params, {}, [])), encoding="utf-8")
    return path


def _bench(tmp_path: Path, name: str, *extra: str) -> dict:  # type: ignore[type-arg]
    out = tmp_path / name
    args = ["bench", "suite", "--backend", "sim", "--chip", "m4max", "--model-only"]
    assert main([*args, *extra, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_fit_recovers_the_parameters_that_wrote_the_bench_file(tmp_path: Path) -> None:
    doc = _bench(tmp_path, "suite.json", "--chip-profile", str(_profile(tmp_path)))
    assert doc["anetrain"]["times"] == "modeled"
    assert set(doc["benchmarks"]) >= {
        "inmem_peak",
        "inmem_bench",
        "sram_bench",
        "sram_probe",
        "dispatch",
        "int8_w8a8",
    }
    out = tmp_path / "fitted.json"
    assert main(["perfmodel", "fit", str(tmp_path / "suite.json"), "--out", str(out)]) == 0
    fitted = read_profile(out)
    assert fitted.chip == "m4max"
    for key in ("sram_gbps", "big_op_gbps", "dram_gbps", "per_op_us", "dispatch_us", "floor_us"):
        assert getattr(fitted, key) == pytest.approx(getattr(KNOWN, key), rel=0.02), key
    assert json.loads(out.read_text())["fit"]["max_abs_error_pct"] < 1.0


def test_chip_profile_changes_the_modeled_times(tmp_path: Path) -> None:
    packaged = _bench(tmp_path, "a.json")["benchmarks"]["inmem_peak"]
    custom = _bench(tmp_path, "b.json", "--chip-profile", str(_profile(tmp_path)))
    rows = custom["benchmarks"]["inmem_peak"]
    assert [r["ms_per_eval"] for r in rows] != [r["ms_per_eval"] for r in packaged]
    top = next(r for r in rows if r["depth"] == 128 and r["channels"] == 512)
    expected = predict(probes.conv_chain(512, 64, 128, data=False).program, KNOWN).ms
    assert top["ms_per_eval"] == pytest.approx(expected, rel=1e-3)


def test_chip_profile_reaches_the_simulators_modeled_time(tmp_path: Path) -> None:
    from anetrain.commands.chipargs import resolve_chip

    class Args:
        chip, macos, chip_profile = None, None, _profile(tmp_path)

    chip = resolve_chip(Args())  # type: ignore[arg-type]
    assert chip is not None and chip.name == "m4max"
    model = probes.conv_chain(64, 16, 4)
    kernel = runtime.compile(model.program, model.weights, backend="sim", chip=chip)
    expected = round(predict(model.program, KNOWN).total_ns)
    assert perfmodel.modeled_ns(model.program, kernel.chip) == expected


def test_fit_reads_the_community_schema_and_rejects_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = _bench(tmp_path, "ours.json")
    community = {
        "schema_version": 1,
        "system": {"chip": "Apple M4 Max"},
        "benchmarks": {
            "sram_probe": [
                {
                    "channels": r["channels"],
                    "weight_mb": r["weight_mb"],
                    "ms_per_eval": r["ms_per_eval"],
                }
                for r in doc["benchmarks"]["sram_probe"]
            ],
            "inmem_peak": doc["benchmarks"]["inmem_peak"],
        },
    }
    path = tmp_path / "community.json"
    path.write_text(json.dumps(community), encoding="utf-8")
    out = tmp_path / "p.json"
    assert main(["perfmodel", "fit", str(path), "--out", str(out)]) == 0
    assert read_profile(out).chip == "m4max"
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    capsys.readouterr()
    assert main(["perfmodel", "fit", str(bad), "--out", str(tmp_path / "x.json")]) == 1
    err = capsys.readouterr().err
    assert "bad.json is not valid JSON" in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()
    assert main(["bench", "peak", "--model-only", "--chip-profile", str(bad)]) == 1


def _mil(tmp_path: Path, target: str, seq: int = 32) -> Path:
    b = Builder(target)
    b.returns(b.softmax(b.input("x", FP16, [1, 8, 1, seq]), axis=1, name="y"))
    path = tmp_path / "k.mil"
    path.write_text(print_program(b.program()), encoding="utf-8")
    return path


def test_mil_check_lists_registry_findings_like_a_linter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _mil(tmp_path, "ios18")
    assert main(["mil", "check", str(path), "--chip", "m1"]) == 1
    err = capsys.readouterr().err
    assert f"{path}: error[dialect-program-version]: program(1.3)" in err
    assert "reported: maderix/ANE PR #6" in err and "error[dialect-opset]" in err
    assert "2 error(s)" in err
    # the same M1 on macOS 15 takes program(1.3)
    assert main(["mil", "check", str(path), "--chip", "m1", "--os", "15"]) == 0
    # warnings are listed and do not fail the check
    short = _mil(tmp_path, "ios18", seq=8)
    assert main(["mil", "check", str(short), "--chip", "m4"]) == 0
    err = capsys.readouterr().err
    assert "warning[min-spatial]" in err and "warning[surface-min-bytes]" in err
    assert "0 error(s), 4 warning(s)" in err
    assert main(["mil", "check", str(path), "--chip", "m4", "--os", "13"]) == 1
    assert "no chip profiles for macOS '13'" in capsys.readouterr().err


def test_fit_names_an_unknown_chip_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _bench(tmp_path, "ours.json")
    out = str(tmp_path / "p.json")
    capsys.readouterr()
    ours = str(tmp_path / "ours.json")
    assert main(["perfmodel", "fit", ours, "--chip", "m9", "--out", out]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ours.json: unknown chip 'm9'" in err, err
    alien = tmp_path / "alien.json"
    alien.write_text(json.dumps({"system": {"chip": "Apple Z9"}, "benchmarks": {}}))
    assert main(["perfmodel", "fit", str(alien), "--out", out]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "alien.json: unknown chip 'z9'" in err and "--chip" in err
    assert not Path(out).exists()


def test_a_profile_for_another_chip_is_refused_not_relabelled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An M4 Max profile carries the M4 Max's rated peak and bandwidth: '--chip m4' with it
    would model an M4 Max labelled M4."""
    profile = str(_profile(tmp_path))  # fitted for m4max
    capsys.readouterr()
    args = ["bench", "dispatch", "--backend", "sim", "--model-only", "--chip-profile", profile]
    assert main([*args, "--chip", "m4"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fitted for m4max, but --chip is m4" in err, err
    assert main([*args, "--chip", "M4 Max"]) == 0  # the same chip, spelled otherwise


@pytest.mark.parametrize("chip", ["m1", "m5"])
def test_train_utilization_is_over_the_rated_fp16_peak(tmp_path: Path, chip: str) -> None:
    """M1's rated 11 TOPS is an fp16 figure (not INT8 to halve) and the M5 has no rated TOPS in
    its profile: utilization uses the perf model's rated fp16 peak, as the modeled times do."""
    out = tmp_path / "run"
    args = ["train", "--steps", "1", "--accum", "1", "--backend", "sim", "--chip", chip]
    assert main([*args, "--sample-tokens", "0", "--no-progress", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    peak = get_params(chip).rated_fp16_tflops
    assert s["chip_peak_fp16_tflops"] == peak == {"m1": 11.0, "m5": 19.0}[chip]
    assert s["modeled_utilization_pct"] == pytest.approx(100 * s["modeled_kernel_tflops"] / peak)
