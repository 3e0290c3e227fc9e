"""``anetrain export coreml`` writes an .mlpackage coremltools accepted with our types."""

from __future__ import annotations

from pathlib import Path

import pytest

from anetrain.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "mil"


def test_export_example_with_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("coremltools")
    out = tmp_path / "rmsnorm.mlpackage"
    assert (
        main(["export", "coreml", str(EXAMPLES / "rmsnorm" / "rmsnorm.mil"), "--out", str(out)])
        == 0
    )
    assert (out / "Manifest.json").is_file()
    weights = list(out.rglob("weight.bin"))
    assert weights and weights[0].stat().st_size > 768 * 2  # the RMSNorm weight came along
    assert f"wrote {out}" in capsys.readouterr().out


def test_export_reports_parse_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.mil"
    bad.write_text("program(1.3)\n{\n  nonsense\n}\n")
    assert main(["export", "coreml", str(bad), "--out", str(tmp_path / "x.mlpackage")]) == 1
    assert f"{bad}:3:" in capsys.readouterr().err
