"""The ``anetrain`` entry point and ``anetrain mil check`` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from anetrain import __version__
from anetrain.cli import main
from anetrain.kernels.examples import example_models, write_examples
from seed_mil import FOOTER, HEADER, SEED_DYN_MATMUL

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "mil"

SEED_TEXT = HEADER + SEED_DYN_MATMUL + FOOTER


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "mil" in capsys.readouterr().out


def test_console_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "anetrain.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and __version__ in result.stdout


def test_shipped_examples_match_generators(tmp_path: Path) -> None:
    write_examples(tmp_path)
    for name in example_models():
        for generated in sorted((tmp_path / name).rglob("*")):
            if generated.is_file():
                shipped = EXAMPLES / generated.relative_to(tmp_path)
                assert shipped.exists(), (
                    f"{shipped} missing: run python -m anetrain.kernels.examples"
                )
                assert shipped.read_bytes() == generated.read_bytes(), f"{shipped} is stale"


@pytest.mark.parametrize("name", sorted(example_models()))
def test_check_accepts_every_example(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mil", "check", str(EXAMPLES / name / f"{name}.mil")]) == 0
    out = capsys.readouterr().out
    assert ": OK" in out and "FLOPs:" in out


def test_check_summary_of_dyn_matmul(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mil", "check", str(EXAMPLES / "dyn_matmul" / "dyn_matmul.mil")]) == 0
    out = capsys.readouterr().out
    assert "tensor<fp16, [1, 768, 1, 2304]>" in out
    assert "matmul 1" in out and "const 9" in out
    assert "805.31 MFLOP" in out  # 2 * 768 * 2048 * 256


def test_check_accepts_seed_text_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "seed.mil"
    path.write_text(SEED_TEXT)
    assert main(["mil", "check", str(path), "--target", "ios18"]) == 0


def test_check_reports_file_line_col(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = SEED_TEXT.replace(
        "mm_yt = transpose(perm=mm_pm,x=mm_yh)", "mm_yt = transpose(perm=mm_pm,x=mm_nope)"
    )
    path = tmp_path / "bad.mil"
    path.write_text(bad)
    assert main(["mil", "check", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    line = bad.splitlines().index(next(s for s in bad.splitlines() if "mm_nope" in s)) + 1
    col = bad.splitlines()[line - 1].index("mm_nope") + 1
    assert err == f"{path}:{line}:{col}: error: undefined variable 'mm_nope'"


def test_check_reports_type_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = SEED_TEXT.replace(
        "tensor<fp16, [1,2048,1,256]> mm_y", "tensor<fp16, [1,2048,1,255]> mm_y"
    )
    path = tmp_path / "bad.mil"
    path.write_text(bad)
    assert main(["mil", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:21:9:" in err and "declared" in err


def test_check_missing_weight_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = example_models()["rmsnorm"]
    path = tmp_path / "rms.mil"
    path.write_text(model.text)
    assert main(["mil", "check", str(path)]) == 1
    assert "weights/rms_w.bin" in capsys.readouterr().err
    model.save(tmp_path / "elsewhere")
    assert main(["mil", "check", str(path), "--weights", str(tmp_path / "elsewhere")]) == 0


def test_check_corrupt_weight_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = example_models()["rmsnorm"].save(tmp_path)
    blob = tmp_path / "weights" / "rms_w.bin"
    blob.write_bytes(blob.read_bytes()[:100])
    assert main(["mil", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert ":" in err and "rms_w.bin" in err


def test_check_target_mismatch(capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / "rmsnorm_m1" / "rmsnorm_m1.mil"
    assert main(["mil", "check", str(path), "--target", "ios16"]) == 0
    capsys.readouterr()
    assert main(["mil", "check", str(path), "--target", "ios18"]) == 1
    assert "--target ios18" in capsys.readouterr().err


def test_print_converts_between_targets(capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / "rmsnorm" / "rmsnorm.mil"
    assert main(["mil", "print", str(path), "--target", "ios16"]) == 0
    converted = capsys.readouterr().out
    assert converted.startswith("program(1.0)") and 'tensor<string, []>("xn")' in converted
    assert converted == (EXAMPLES / "rmsnorm_m1" / "rmsnorm_m1.mil").read_text()


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["mil", "check", str(tmp_path / "nope.mil")]) == 1
    assert "no such file" in capsys.readouterr().err
