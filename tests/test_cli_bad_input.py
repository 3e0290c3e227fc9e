"""Every subcommand refuses bad input with one line, a non-zero exit and no traceback.

The table is run in-process through ``anetrain.cli.main`` (the same code path as the console
script, without a Python start per case). A case passes when the command exits non-zero
before doing its work, prints exactly one non-empty line to stderr and that line is ours
(``anetrain...: error:``) rather than a traceback or the internal-error report.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from anetrain.cli import main

TOML = "dim = 32\nn_layers = 1\nn_heads = 2\nhidden_dim = 64\nvocab_size = 512\nseq_len = 32\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad")
    (root / "m.toml").write_text(TOML)
    (root / "latin1.toml").write_bytes("dim = 32 # caf\xe9\n".encode("latin-1"))
    (root / "bad.toml").write_text("dim = = 3\n")
    (root / "huge.toml").write_text(TOML.replace("dim = 32", "dim = 4000000"))
    (root / "folder").mkdir()
    (root / "afile").write_text("x")
    (root / "odd.bin").write_bytes(b"\x01\x00\x02")
    tokens = np.tile(np.arange(1, 200, dtype="<u2"), 40)
    (root / "tok.bin").write_bytes(tokens.tobytes())
    (root / "big_ids.bin").write_bytes(np.full(2000, 60000, dtype="<u2").tobytes())
    (root / "empty.bin").write_bytes(b"")
    (root / "garbage.safetensors").write_bytes(os.urandom(300))
    (root / "bad.mil").write_text("program(1.3) { func main<ios18>( { } }")
    (root / "binary.mil").write_bytes(b"\xff\xfe\x00junk")
    (root / "story.txt").write_text("Once upon a time.\n")
    (root / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (root / "run").mkdir()
    return {k: str(root / k) for k in [p.name for p in root.iterdir()]} | {"root": str(root)}


def _train(f: dict[str, str], *extra: str) -> list[str]:
    out = str(Path(f["root"]) / "trainout")
    return [
        "train", "--config", f["m.toml"], "--data", f["tok.bin"], "--steps", "2",
        "--accum", "1", "--sample-tokens", "0", "--no-progress", "--backend", "sim",
        "--out", out, *extra,
    ]  # fmt: skip


CASES: dict[str, object] = {
    # ---- train: option values
    "train --lr nan": lambda f: _train(f, "--lr", "nan"),
    "train --lr inf": lambda f: _train(f, "--lr", "inf"),
    "train --lr -1": lambda f: _train(f, "--lr", "-1"),
    "train --lr 0": lambda f: _train(f, "--lr", "0"),
    "train --lr word": lambda f: _train(f, "--lr", "fast"),
    "train --steps 0": lambda f: _train(f, "--steps", "0"),
    "train --steps -5": lambda f: _train(f, "--steps", "-5"),
    "train --steps 1.5": lambda f: _train(f, "--steps", "1.5"),
    "train --accum 0": lambda f: _train(f, "--accum", "0"),
    "train --warmup -1": lambda f: _train(f, "--warmup", "-1"),
    "train --eval-every 0": lambda f: _train(f, "--eval-every", "0"),
    "train --eval-every -3": lambda f: _train(f, "--eval-every", "-3"),
    "train --ckpt-every 0": lambda f: _train(f, "--ckpt-every", "0"),
    "train --loss-scale nan": lambda f: _train(f, "--loss-scale", "nan"),
    "train --loss-scale 0": lambda f: _train(f, "--loss-scale", "0"),
    "train --loss-scale -256": lambda f: _train(f, "--loss-scale", "-256"),
    "train --loss-scale inf": lambda f: _train(f, "--loss-scale", "inf"),
    "train --seed -1": lambda f: _train(f, "--seed", "-1"),
    "train --seed 2**40": lambda f: _train(f, "--seed", str(2**40)),
    "train --sample-tokens -1": lambda f: _train(f, "--sample-tokens", "-1"),
    "train --max-memory 0": lambda f: _train(f, "--max-memory", "0"),
    "train --max-memory junk": lambda f: _train(f, "--max-memory", "lots"),
    "train --max-memory 1K": lambda f: _train(f, "--max-memory", "1K"),
    "train --backend gpu": lambda f: _train(f, "--backend", "gpu"),
    "train --chip m99": lambda f: _train(f, "--chip", "m99"),
    "train --backend ane": lambda f: _train(f, "--backend", "ane"),
    "train --unknown": lambda f: _train(f, "--frobnicate"),
    # ---- train: files
    "train --model nosuch": lambda f: ["train", "--model", "nosuch"],
    "train --config missing": lambda f: ["train", "--config", f["root"] + "/nope.toml"],
    "train --config folder": lambda f: ["train", "--config", f["folder"]],
    "train --config latin1": lambda f: ["train", "--config", f["latin1.toml"]],
    "train --config bad toml": lambda f: ["train", "--config", f["bad.toml"]],
    "train --config huge": lambda f: _train(f, "--config", f["huge.toml"]),
    "train --data folder": lambda f: _train(f, "--data", f["folder"]),
    "train --data missing": lambda f: _train(f, "--data", f["root"] + "/nope.bin"),
    "train --data odd size": lambda f: _train(f, "--data", f["odd.bin"]),
    "train --data empty": lambda f: _train(f, "--data", f["empty.bin"]),
    "train --data ids>vocab": lambda f: _train(f, "--data", f["big_ids.bin"]),
    "train --tokenizer missing": lambda f: _train(
        f, "--tokenizer", f["root"] + "/nope.bin", "--sample-tokens", "5"
    ),
    "train --out is a file": lambda f: _train(f, "--out", f["afile"]),
    "train --out under a file": lambda f: _train(f, "--out", f["afile"] + "/run"),
    "train --resume without --out": lambda f: ["train", "--config", f["m.toml"], "--resume"],
    "train --resume empty folder": lambda f: _train(f, "--out", f["run"], "--resume"),
    # ---- generate
    "generate no --ckpt": lambda f: ["generate"],
    "generate --ckpt missing": lambda f: ["generate", "--ckpt", f["root"] + "/nope"],
    "generate --ckpt garbage": lambda f: ["generate", "--ckpt", f["garbage.safetensors"]],
    "generate --ckpt empty folder": lambda f: ["generate", "--ckpt", f["folder"]],
    "generate --ckpt odd file": lambda f: ["generate", "--ckpt", f["odd.bin"]],
    "generate --max-tokens -1": lambda f: ["generate", "--ckpt", f["folder"], "--max-tokens", "-1"],
    "generate --temperature nan": lambda f: [
        "generate",
        "--ckpt",
        f["folder"],
        "--temperature",
        "nan",
    ],
    "generate --temperature -1": lambda f: [
        "generate",
        "--ckpt",
        f["folder"],
        "--temperature",
        "-1",
    ],
    "generate --top-k 0": lambda f: ["generate", "--ckpt", f["folder"], "--top-k", "0"],
    "generate --top-p 1.5": lambda f: ["generate", "--ckpt", f["folder"], "--top-p", "1.5"],
    "generate --top-p 0": lambda f: ["generate", "--ckpt", f["folder"], "--top-p", "0"],
    "generate --top-p nan": lambda f: ["generate", "--ckpt", f["folder"], "--top-p", "nan"],
    "generate --seed -1": lambda f: ["generate", "--ckpt", f["folder"], "--seed", "-1"],
    "generate --max-memory 1K": lambda f: ["generate", "--ckpt", f["folder"], "--max-memory", "x"],
    # ---- dashboard
    "dashboard missing": lambda f: ["dashboard", f["root"] + "/nope", "--once"],
    "dashboard a file": lambda f: ["dashboard", f["afile"], "--once"],
    "dashboard empty folder": lambda f: ["dashboard", f["folder"], "--once"],
    "dashboard --refresh 0": lambda f: ["dashboard", f["folder"], "--refresh", "0"],
    "dashboard --refresh nan": lambda f: ["dashboard", f["folder"], "--refresh", "nan"],
    "dashboard --refresh inf": lambda f: ["dashboard", f["folder"], "--refresh", "inf"],
    "dashboard --window 1": lambda f: ["dashboard", f["folder"], "--window", "1"],
    # ---- bench
    "bench no program": lambda f: ["bench"],
    "bench nosuch": lambda f: ["bench", "nosuch"],
    "bench peak --iters 0": lambda f: ["bench", "peak", "--iters", "0"],
    "bench peak --warmup -1": lambda f: ["bench", "peak", "--warmup", "-1"],
    "bench peak --chip m99": lambda f: ["bench", "peak", "--backend", "sim", "--chip", "m99"],
    "bench peak --backend ane": lambda f: ["bench", "peak", "--backend", "ane"],
    "bench peak --seed -1": lambda f: ["bench", "peak", "--seed", "-1", "--model-only"],
    "bench peak --json folder": lambda f: ["bench", "peak", "--model-only", "--json", f["folder"]],
    "bench peak --json under file": lambda f: [
        "bench",
        "peak",
        "--model-only",
        "--json",
        f["afile"] + "/x.json",
    ],
    "bench train --model nosuch": lambda f: ["bench", "train", "--model", "nosuch"],
    "bench train --chip m99": lambda f: ["bench", "train", "--chip", "m99"],
    "bench train --model latin1": lambda f: ["bench", "train", "--model", f["latin1.toml"]],
    # ---- mil
    "mil no action": lambda f: ["mil"],
    "mil check missing": lambda f: ["mil", "check", f["root"] + "/nope.mil"],
    "mil check folder": lambda f: ["mil", "check", f["folder"]],
    "mil check binary": lambda f: ["mil", "check", f["binary.mil"]],
    "mil check syntax": lambda f: ["mil", "check", f["bad.mil"]],
    "mil check --weights file": lambda f: ["mil", "check", f["bad.mil"], "--weights", f["afile"]],
    "mil check --target ios9": lambda f: ["mil", "check", f["bad.mil"], "--target", "ios9"],
    "mil print missing": lambda f: ["mil", "print", f["root"] + "/nope.mil"],
    "mil print folder": lambda f: ["mil", "print", f["folder"]],
    "mil print binary": lambda f: ["mil", "print", f["binary.mil"]],
    # ---- data
    "data no action": lambda f: ["data"],
    "data download nosuch": lambda f: ["data", "download", "nosuch"],
    "data download --timeout 0": lambda f: ["data", "download", "tinystories", "--timeout", "0"],
    "data download --timeout nan": lambda f: [
        "data",
        "download",
        "tinystories",
        "--timeout",
        "nan",
    ],
    "data download --out file": lambda f: [
        "data",
        "download",
        "tinystories",
        "--out",
        f["afile"],
        "--url",
        "file:///nonexistent",
    ],
    "data download --url missing": lambda f: [
        "data",
        "download",
        "tinystories",
        "--out",
        f["root"] + "/dl",
        "--url",
        "file:///nonexistent.tar.gz",
        "--quiet",
    ],
    "data download --url bad scheme": lambda f: [
        "data",
        "download",
        "tinystories",
        "--out",
        f["root"] + "/dl2",
        "--url",
        "gopher://x",
        "--quiet",
    ],
    "data prepare missing input": lambda f: [
        "data",
        "prepare",
        f["root"] + "/nope.txt",
        "--out",
        f["root"] + "/p.bin",
        "--quiet",
    ],
    "data prepare folder input": lambda f: [
        "data",
        "prepare",
        f["folder"],
        "--out",
        f["root"] + "/p.bin",
        "--quiet",
    ],
    "data prepare latin1 input": lambda f: [
        "data",
        "prepare",
        f["latin1.txt"],
        "--out",
        f["root"] + "/p.bin",
        "--quiet",
    ],
    "data prepare --out folder": lambda f: [
        "data",
        "prepare",
        f["story.txt"],
        "--out",
        f["folder"],
        "--quiet",
    ],
    "data prepare --out under file": lambda f: [
        "data",
        "prepare",
        f["story.txt"],
        "--out",
        f["afile"] + "/p.bin",
        "--quiet",
    ],
    "data prepare --tokenizer missing": lambda f: [
        "data",
        "prepare",
        f["story.txt"],
        "--out",
        f["root"] + "/p.bin",
        "--tokenizer",
        f["root"] + "/nope.bin",
        "--quiet",
    ],
    "data prepare --tokenizer garbage": lambda f: [
        "data",
        "prepare",
        f["story.txt"],
        "--out",
        f["root"] + "/p.bin",
        "--tokenizer",
        f["odd.bin"],
        "--quiet",
    ],
    "data builtin --stories 0": lambda f: ["data", "builtin", "--stories", "0"],
    "data builtin --stories -4": lambda f: ["data", "builtin", "--stories", "-4"],
    "data builtin --seed -1": lambda f: ["data", "builtin", "--seed", "-1"],
    "data builtin --cache-dir file": lambda f: ["data", "builtin", "--cache-dir", f["afile"]],
    "data builtin --text folder": lambda f: [
        "data",
        "builtin",
        "--cache-dir",
        f["root"] + "/cache",
        "--stories",
        "3",
        "--text",
        f["folder"],
    ],
    "data info missing": lambda f: ["data", "info", f["root"] + "/nope.bin"],
    "data info folder": lambda f: ["data", "info", f["folder"]],
    "data info odd": lambda f: ["data", "info", f["odd.bin"]],
    "data info --vocab-size 0": lambda f: ["data", "info", f["tok.bin"], "--vocab-size", "0"],
    "data info --vocab-size small": lambda f: ["data", "info", f["tok.bin"], "--vocab-size", "10"],
    "data info --tokenizer garbage": lambda f: [
        "data",
        "info",
        f["tok.bin"],
        "--tokenizer",
        f["odd.bin"],
    ],
    # ---- export
    "export no format": lambda f: ["export"],
    "export coreml missing": lambda f: [
        "export",
        "coreml",
        f["root"] + "/nope.mil",
        "--out",
        f["root"] + "/x.mlpackage",
    ],
    "export coreml binary": lambda f: [
        "export",
        "coreml",
        f["binary.mil"],
        "--out",
        f["root"] + "/x.mlpackage",
    ],
    "export coreml folder": lambda f: [
        "export",
        "coreml",
        f["folder"],
        "--out",
        f["root"] + "/x.mlpackage",
    ],
    "export coreml syntax": lambda f: [
        "export",
        "coreml",
        f["bad.mil"],
        "--out",
        f["root"] + "/x.mlpackage",
    ],
    # ---- doctor
    "doctor --chip m99": lambda f: ["doctor", "--chip", "m99"],
    "doctor --bogus": lambda f: ["doctor", "--bogus"],
    "doctor --json folder": lambda f: ["doctor", "--json", f["folder"]],
    "doctor --json under file": lambda f: ["doctor", "--json", f["afile"] + "/r.json"],
    # ---- top level
    "no command": lambda f: [],
    "unknown command": lambda f: ["frobnicate"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(
    case: str, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = CASES[case](files)  # type: ignore[operator]
    try:
        status = main(argv)
    except SystemExit as stop:  # argparse usage errors
        status = stop.code if isinstance(stop.code, int) else 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status != 0, f"{case}: accepted (exit 0)"
    assert "Traceback" not in err, f"{case}: traceback\n{err}"
    assert "internal error" not in err, f"{case}: reported as our bug\n{err}"
    assert len(lines) == 1, f"{case}: expected one line on stderr, got\n{err}"
    assert re.match(r"anetrain[\w ]*: error: |\S+?(:\d+)*: error: ", lines[0]), lines[0]


def test_our_bugs_keep_the_traceback_and_ask_for_a_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from anetrain.commands import doctor

    def broken(args: object) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(doctor, "run", broken)
    assert main(["doctor"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err
    assert err.strip().splitlines()[-1].startswith("anetrain: internal error")
    assert "please report it" in err


def test_file_system_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from anetrain.commands import doctor

    def full(args: object) -> int:
        raise OSError(28, "No space left on device", "/data/run/metrics.jsonl")

    monkeypatch.setattr(doctor, "run", full)
    assert main(["doctor"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "anetrain: error: /data/run/metrics.jsonl: No space left on device; free space on that "
        "disk (or choose another --out) and run again\n"
    )
