"""``anetrain doctor``: runs anywhere, says which backends work here and why ane does not."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from anetrain.cli import main

OFF_MAC = pytest.mark.skipif(sys.platform == "darwin", reason="checks the non-macOS report")


def test_doctor_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "Python" in out and "numpy" in out
    assert "sim        available" in out
    assert "budget     119 compiles per process" in out
    assert "SRAM 32 MiB" in out and "rated" in out


@OFF_MAC
def test_doctor_says_why_ane_is_unavailable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    ane = next(line for line in out.splitlines() if line.startswith("  ane "))
    assert "unavailable" in ane and "macOS" in ane
    assert "chip         m4 (Apple M4, macOS 26 profile; default)" in out


def test_doctor_json_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("anetrain", "platform", "libraries", "backends", "detected_chip", "chip"):
        assert key in report
    assert report["platform"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert report["libraries"]["numpy"]
    assert report["backends"]["sim"] == {"available": True, "reason": ""}
    chip = report["chip"]
    for key in ("program_versions", "opsets", "compile_budget", "max_dim", "sram_bytes"):
        assert key in chip
    assert chip["rated_tops"] is None or chip["rated_tops"] > 0
    assert chip["ane_cores"] >= 16
    if sys.platform != "darwin":
        assert report["backends"]["ane"]["available"] is False
        assert "macOS" in report["backends"]["ane"]["reason"]
        assert chip["name"] == "m4" and chip["source"] == "default"
        assert report["detected_chip"]["chip"] is None


def test_doctor_chip_m1_shows_ios16(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--chip", "m1"]) == 0
    out = capsys.readouterr().out
    assert "chip         m1 (Apple M1, macOS 26 profile; --chip)" in out
    assert "opsets ios16;" in out and "program(1.0)" in out and "unsupported ops: cast" in out
    assert main(["doctor", "--chip", "M1", "--json"]) == 0
    chip = json.loads(capsys.readouterr().out)["chip"]
    assert chip["opsets"] == ["ios16"] and chip["unsupported_ops"] == ["cast"]


def test_doctor_unknown_chip_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--chip", "m9"]) == 1
    assert "unknown chip 'm9'" in capsys.readouterr().err


def test_doctor_as_a_user_runs_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "anetrain.cli", "doctor", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["backends"]["sim"]["available"] is True


def test_doctor_os_selects_the_macos_profile(capsys: pytest.CaptureFixture[str]) -> None:
    """M1 on macOS 15 trained with program(1.3) kernels; on 26 it takes program(1.0) only."""
    assert main(["doctor", "--chip", "m1", "--os", "15"]) == 0
    out = capsys.readouterr().out
    assert "macOS 15 profile" in out and "program(1.0, 1.3)" in out
    assert main(["doctor", "--chip", "m1", "--os", "12"]) == 1
    assert "no chip profiles for macOS '12'" in capsys.readouterr().err


def test_doctor_shows_the_chip_of_its_chip_profile(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--chip-profile m3pro.json is a profile for the M3 Pro: doctor shows that chip's limits,
    not the default M4's."""
    from anetrain.perfmodel import get_params
    from anetrain.perfmodel.params import clear_profiles, profile_document

    path = tmp_path / "m3pro.json"
    path.write_text(json.dumps(profile_document(get_params("m3pro"), {}, [])))
    try:
        assert main(["doctor", "--chip-profile", str(path)]) == 0
    finally:
        clear_profiles()
    assert "chip         m3pro (Apple M3 Pro, macOS 26 profile; --chip)" in capsys.readouterr().out
