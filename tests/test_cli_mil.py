"""The ``anetrain`` entry point and ``anetrain mil check`` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from anetrain import __version__
from anetrain.cli import main
from anetrain.kernels.examples import example_models, write_examples

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "mil"

SEED_DYN_MATMUL = """program(1.3)
[buildInfo = dict<string, string>({{"coremlc-component-MIL", "3510.2.1"}, {"coremlc-version", "3505.4.1"}, {"coremltools-component-milinternal", ""}, {"coremltools-version", "9.0"}})]
{
    func main<ios18>(tensor<fp16, [1, 768, 1, 2304]> x) {
        tensor<int32, [4]> mm_ba = const()[name=string("mm_ba"), val=tensor<int32, [4]>([0,0,0,0])];
        tensor<int32, [4]> mm_sa = const()[name=string("mm_sa"), val=tensor<int32, [4]>([1,768,1,256])];
        tensor<fp16, [1,768,1,256]> mm_act = slice_by_size(x=x,begin=mm_ba,size=mm_sa)[name=string("mm_act")];
        tensor<int32, [4]> mm_bw = const()[name=string("mm_bw"), val=tensor<int32, [4]>([0,0,0,256])];
        tensor<int32, [4]> mm_sw = const()[name=string("mm_sw"), val=tensor<int32, [4]>([1,768,1,2048])];
        tensor<fp16, [1,768,1,2048]> mm_wt = slice_by_size(x=x,begin=mm_bw,size=mm_sw)[name=string("mm_wt")];
        tensor<int32, [4]> mm_ra = const()[name=string("mm_ra"), val=tensor<int32, [4]>([1,1,768,256])];
        tensor<fp16, [1,1,768,256]> mm_a2 = reshape(shape=mm_ra,x=mm_act)[name=string("mm_a2")];
        tensor<int32, [4]> mm_pm = const()[name=string("mm_pm"), val=tensor<int32, [4]>([0,1,3,2])];
        tensor<fp16, [1,1,256,768]> mm_a3 = transpose(perm=mm_pm,x=mm_a2)[name=string("mm_a3")];
        tensor<int32, [4]> mm_rw = const()[name=string("mm_rw"), val=tensor<int32, [4]>([1,1,768,2048])];
        tensor<fp16, [1,1,768,2048]> mm_W = reshape(shape=mm_rw,x=mm_wt)[name=string("mm_W")];
        bool bF = const()[name=string("bF"), val=bool(false)];
        tensor<fp16, [1,1,256,2048]> mm_yh = matmul(transpose_x=bF,transpose_y=bF,x=mm_a3,y=mm_W)[name=string("mm_yh")];
        tensor<fp16, [1,1,2048,256]> mm_yt = transpose(perm=mm_pm,x=mm_yh)[name=string("mm_yt")];
        tensor<int32, [4]> mm_ro = const()[name=string("mm_ro"), val=tensor<int32, [4]>([1,2048,1,256])];
        tensor<fp16, [1,2048,1,256]> mm_y = reshape(shape=mm_ro,x=mm_yt)[name=string("mm_y")];
    } -> (mm_y);
}
"""  # noqa: E501


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
    path.write_text(SEED_DYN_MATMUL)
    assert main(["mil", "check", str(path), "--target", "ios18"]) == 0


def test_check_reports_file_line_col(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = SEED_DYN_MATMUL.replace(
        "mm_yt = transpose(perm=mm_pm,x=mm_yh)", "mm_yt = transpose(perm=mm_pm,x=mm_nope)"
    )
    path = tmp_path / "bad.mil"
    path.write_text(bad)
    assert main(["mil", "check", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    line = bad.splitlines().index(next(s for s in bad.splitlines() if "mm_nope" in s)) + 1
    col = bad.splitlines()[line - 1].index("mm_nope") + 1
    assert err == f"{path}:{line}:{col}: undefined variable 'mm_nope'"


def test_check_reports_type_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = SEED_DYN_MATMUL.replace(
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
