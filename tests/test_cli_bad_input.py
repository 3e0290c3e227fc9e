"""Every subcommand refuses bad input with one line, a non-zero exit and no traceback.

The table is run in-process through ``anetrain.cli.main`` (the same code path as the console
script, without a Python start per case). A case passes when the command exits non-zero
before doing its work, prints exactly one non-empty line to stderr and that line is ours
(``anetrain...: error:``) rather than a traceback or the internal-error report.
"""

from __future__ import annotations

import os
import re

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
    (root / "empty.toml").write_text("")
    (root / "table.toml").write_text("[model]\n")
    os.mkfifo(root / "fifo")
    for name, text in {
        "config.json": "garbage",
        "metrics.jsonl": "x\n",
        "summary.json": "[1",
    }.items():
        (root / f"bad_{name}").mkdir()
        (root / f"bad_{name}" / name).write_text(text)
    return {k: str(root / k) for k in [p.name for p in root.iterdir()]} | {"root": str(root)}


TRAIN = (
    "train --config {m.toml} --data {tok.bin} --steps 2 --accum 1 --sample-tokens 0 "
    "--no-progress --backend sim --out {root}/trainout"
)

# (case, command line): {name} is a file of the fixture below, TRAIN a valid training command
CASES = [
    ("train --lr nan", "TRAIN --lr nan"),
    ("train --lr inf", "TRAIN --lr inf"),
    ("train --lr -1", "TRAIN --lr -1"),
    ("train --lr 0", "TRAIN --lr 0"),
    ("train --lr word", "TRAIN --lr fast"),
    ("train --steps 0", "TRAIN --steps 0"),
    ("train --steps -5", "TRAIN --steps -5"),
    ("train --steps 1.5", "TRAIN --steps 1.5"),
    ("train --accum 0", "TRAIN --accum 0"),
    ("train --warmup -1", "TRAIN --warmup -1"),
    ("train --eval-every 0", "TRAIN --eval-every 0"),
    ("train --eval-every -3", "TRAIN --eval-every -3"),
    ("train --ckpt-every 0", "TRAIN --ckpt-every 0"),
    ("train --loss-scale nan", "TRAIN --loss-scale nan"),
    ("train --loss-scale 0", "TRAIN --loss-scale 0"),
    ("train --loss-scale -256", "TRAIN --loss-scale -256"),
    ("train --loss-scale inf", "TRAIN --loss-scale inf"),
    ("train --seed -1", "TRAIN --seed -1"),
    ("train --seed 2**40", "TRAIN --seed 1099511627776"),
    ("train --sample-tokens -1", "TRAIN --sample-tokens -1"),
    ("train --max-memory 0", "TRAIN --max-memory 0"),
    ("train --max-memory junk", "TRAIN --max-memory lots"),
    ("train --max-memory 1K", "TRAIN --max-memory 1K"),
    ("train --backend gpu", "TRAIN --backend gpu"),
    ("train --chip m99", "TRAIN --chip m99"),
    ("train --backend ane", "TRAIN --backend ane"),
    ("train --unknown", "TRAIN --frobnicate"),
    ("train --model nosuch", "train --model nosuch"),
    ("train --config missing", "train --config {root}/nope.toml"),
    ("train --config folder", "train --config {folder}"),
    ("train --config latin1", "train --config {latin1.toml}"),
    ("train --config bad toml", "train --config {bad.toml}"),
    ("train --config huge", "TRAIN --config {huge.toml}"),
    ("train --config fifo", "train --config {fifo}"),
    ("train --config empty", "TRAIN --config {empty.toml}"),
    ("train --config only [model]", "TRAIN --config {table.toml}"),
    ("train --data fifo", "TRAIN --data {fifo}"),
    ("train --init fifo", "TRAIN --init {fifo}"),
    ("train --tokenizer fifo", "TRAIN --tokenizer {fifo} --sample-tokens 5"),
    ("train --data /dev/null", "TRAIN --data /dev/null"),
    ("train --chip empty", "TRAIN --chip="),
    ("train --accum huge", "TRAIN --accum 1000000000"),
    ("train --out fifo", "TRAIN --out {fifo}"),
    ("train --data folder", "TRAIN --data {folder}"),
    ("train --data missing", "TRAIN --data {root}/nope.bin"),
    ("train --data odd size", "TRAIN --data {odd.bin}"),
    ("train --data empty", "TRAIN --data {empty.bin}"),
    ("train --data ids>vocab", "TRAIN --data {big_ids.bin}"),
    ("train --tokenizer missing", "TRAIN --tokenizer {root}/nope.bin --sample-tokens 5"),
    ("train --out is a file", "TRAIN --out {afile}"),
    ("train --out under a file", "TRAIN --out {afile}/run"),
    ("train --resume without --out", "train --config {m.toml} --resume"),
    ("train --resume empty folder", "TRAIN --out {run} --resume"),
    ("generate no --ckpt", "generate"),
    ("generate --ckpt missing", "generate --ckpt {root}/nope"),
    ("generate --ckpt garbage", "generate --ckpt {garbage.safetensors}"),
    ("generate --ckpt empty folder", "generate --ckpt {folder}"),
    ("generate --ckpt odd file", "generate --ckpt {odd.bin}"),
    ("generate --max-tokens -1", "generate --ckpt {folder} --max-tokens -1"),
    ("generate --temperature nan", "generate --ckpt {folder} --temperature nan"),
    ("generate --temperature -1", "generate --ckpt {folder} --temperature -1"),
    ("generate --top-k 0", "generate --ckpt {folder} --top-k 0"),
    ("generate --top-p 1.5", "generate --ckpt {folder} --top-p 1.5"),
    ("generate --top-p 0", "generate --ckpt {folder} --top-p 0"),
    ("generate --top-p nan", "generate --ckpt {folder} --top-p nan"),
    ("generate --seed -1", "generate --ckpt {folder} --seed -1"),
    ("generate --ckpt fifo", "generate --ckpt {fifo}"),
    ("generate --tokenizer fifo", "generate --ckpt {folder} --tokenizer {fifo}"),
    ("generate --max-memory 1K", "generate --ckpt {folder} --max-memory x"),
    ("dashboard missing", "dashboard {root}/nope --once"),
    ("dashboard a file", "dashboard {afile} --once"),
    ("dashboard empty folder", "dashboard {folder} --once"),
    ("dashboard fifo", "dashboard {fifo} --once"),
    ("dashboard bad config.json", "dashboard {bad_config.json} --once"),
    ("dashboard bad metrics.jsonl", "dashboard {bad_metrics.jsonl} --once"),
    ("dashboard bad summary.json", "dashboard {bad_summary.json} --once"),
    ("dashboard --refresh 0", "dashboard {folder} --refresh 0"),
    ("dashboard --refresh nan", "dashboard {folder} --refresh nan"),
    ("dashboard --refresh inf", "dashboard {folder} --refresh inf"),
    ("dashboard --window 1", "dashboard {folder} --window 1"),
    ("bench no program", "bench"),
    ("bench nosuch", "bench nosuch"),
    ("bench peak --iters 0", "bench peak --iters 0"),
    ("bench peak --warmup -1", "bench peak --warmup -1"),
    ("bench peak --chip m99", "bench peak --backend sim --chip m99"),
    ("bench peak --backend ane", "bench peak --backend ane"),
    ("bench peak --seed -1", "bench peak --seed -1 --model-only"),
    ("bench peak --json folder", "bench peak --model-only --json {folder}"),
    ("bench peak --json under file", "bench peak --model-only --json {afile}/x.json"),
    ("bench train --model nosuch", "bench train --model nosuch"),
    ("bench train --chip m99", "bench train --chip m99"),
    ("bench train --model latin1", "bench train --model {latin1.toml}"),
    ("mil no action", "mil"),
    ("mil check missing", "mil check {root}/nope.mil"),
    ("mil check folder", "mil check {folder}"),
    ("mil check fifo", "mil check {fifo}"),
    ("mil check --weights fifo", "mil check {bad.mil} --weights {fifo}"),
    ("mil check binary", "mil check {binary.mil}"),
    ("mil check syntax", "mil check {bad.mil}"),
    ("mil check --weights file", "mil check {bad.mil} --weights {afile}"),
    ("mil check --target ios9", "mil check {bad.mil} --target ios9"),
    ("mil print missing", "mil print {root}/nope.mil"),
    ("mil print folder", "mil print {folder}"),
    ("mil print fifo", "mil print {fifo}"),
    ("mil print binary", "mil print {binary.mil}"),
    ("data no action", "data"),
    ("data download nosuch", "data download nosuch"),
    ("data download --timeout 0", "data download tinystories --timeout 0"),
    ("data download --timeout nan", "data download tinystories --timeout nan"),
    (
        "data download --out file",
        "data download tinystories --out {afile} --url file:///nonexistent",
    ),
    (
        "data download --url missing",
        "data download tinystories --out {root}/dl --url file:///nonexistent.tar.gz --quiet",
    ),
    (
        "data download --url bad scheme",
        "data download tinystories --out {root}/dl2 --url gopher://x --quiet",
    ),
    ("data prepare missing input", "data prepare {root}/nope.txt --out {root}/p.bin --quiet"),
    ("data prepare folder input", "data prepare {folder} --out {root}/p.bin --quiet"),
    ("data prepare latin1 input", "data prepare {latin1.txt} --out {root}/p.bin --quiet"),
    ("data prepare --out folder", "data prepare {story.txt} --out {folder} --quiet"),
    ("data prepare --out under file", "data prepare {story.txt} --out {afile}/p.bin --quiet"),
    (
        "data prepare --tokenizer missing",
        "data prepare {story.txt} --out {root}/p.bin --tokenizer {root}/nope.bin --quiet",
    ),
    (
        "data prepare --tokenizer garbage",
        "data prepare {story.txt} --out {root}/p.bin --tokenizer {odd.bin} --quiet",
    ),
    ("data builtin --stories 0", "data builtin --stories 0"),
    ("data builtin --stories -4", "data builtin --stories -4"),
    ("data builtin --seed -1", "data builtin --seed -1"),
    ("data builtin --cache-dir file", "data builtin --cache-dir {afile}"),
    (
        "data builtin --text folder",
        "data builtin --cache-dir {root}/cache --stories 3 --text {folder}",
    ),
    ("data info missing", "data info {root}/nope.bin"),
    ("data info folder", "data info {folder}"),
    ("data info fifo", "data info {fifo}"),
    ("data info --tokenizer fifo", "data info {odd.bin} --tokenizer {fifo}"),
    ("data prepare --tokenizer fifo", "data prepare {afile} --tokenizer {fifo} --out {root}/x.bin"),
    ("data info odd", "data info {odd.bin}"),
    ("data info --vocab-size 0", "data info {tok.bin} --vocab-size 0"),
    ("data info --vocab-size small", "data info {tok.bin} --vocab-size 10"),
    ("data info --tokenizer garbage", "data info {tok.bin} --tokenizer {odd.bin}"),
    ("export no format", "export"),
    ("export coreml missing", "export coreml {root}/nope.mil --out {root}/x.mlpackage"),
    ("export coreml binary", "export coreml {binary.mil} --out {root}/x.mlpackage"),
    ("export coreml fifo", "export coreml {fifo} --out {root}/x.mlpackage"),
    ("export coreml folder", "export coreml {folder} --out {root}/x.mlpackage"),
    ("export coreml syntax", "export coreml {bad.mil} --out {root}/x.mlpackage"),
    ("doctor --chip m99", "doctor --chip m99"),
    ("doctor --bogus", "doctor --bogus"),
    ("doctor --json folder", "doctor --json {folder}"),
    ("doctor --json under file", "doctor --json {afile}/r.json"),
    ("no command", ""),
    ("unknown command", "frobnicate"),
]


def expand(command: str, files: dict[str, str]) -> list[str]:
    command = command.replace("TRAIN", TRAIN, 1)
    return [re.sub(r"\{([^}]+)\}", lambda m: files[m.group(1)], word) for word in command.split()]


@pytest.mark.parametrize(("case", "command"), CASES, ids=[c for c, _ in CASES])
def test_bad_input_is_one_clear_line(
    case: str, command: str, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        status = main(expand(command, files))
    except SystemExit as stop:  # argparse usage errors
        status = stop.code if isinstance(stop.code, int) else 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status != 0, f"{case}: accepted (exit 0)"
    assert "Traceback" not in err, f"{case}: traceback\n{err}"
    assert "internal error" not in err, f"{case}: reported as our bug\n{err}"
    assert len(lines) == 1, f"{case}: expected one line on stderr, got\n{err}"
    assert re.match(r"anetrain[\w ]*: error: |\S+?(:\d+)*: error: ", lines[0]), lines[0]


def failing_doctor(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    from anetrain.commands import doctor

    def run(args: object) -> int:
        raise error

    monkeypatch.setattr(doctor, "run", run)


def test_our_bugs_keep_the_traceback_and_ask_for_a_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failing_doctor(monkeypatch, ZeroDivisionError("a bug"))
    assert main(["doctor"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err
    assert err.strip().splitlines()[-1].startswith("anetrain: internal error")
    assert "please report it" in err


def test_file_system_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failing_doctor(monkeypatch, OSError(28, "No space left on device", "/data/run/metrics.jsonl"))
    assert main(["doctor"]) == 1
    assert capsys.readouterr().err == (
        "anetrain: error: /data/run/metrics.jsonl: No space left on device; free space on that "
        "disk (or choose another --out) and run again\n"
    )


# (command, what its one line must say): the message names the problem and the fix
MESSAGES = [
    ("train --config {fifo}", "is a named pipe (FIFO), not a regular file"),
    ("TRAIN --data {fifo}", "is a named pipe (FIFO)"),
    ("TRAIN --out {fifo}", "is a named pipe (FIFO), not a folder"),
    ("TRAIN --config {empty.toml}", "missing dim, n_layers, n_heads, hidden_dim, vocab_size; set"),
    ("TRAIN --config {table.toml}", 'or start from a preset with base = "<preset>"'),
    ("TRAIN --chip=", "expected a chip name, got ''; known: m1,"),
    ("TRAIN --accum 1000000000", "--accum: must be at most 4096"),
    ("dashboard {bad_config.json} --once", "config.json: not a JSON object"),
    ("dashboard {bad_metrics.jsonl} --once", "metrics.jsonl: no metrics records, 1 bad line(s)"),
    ("dashboard {bad_summary.json} --once", "summary.json: not a JSON object"),
]


@pytest.mark.parametrize(("command", "says"), MESSAGES, ids=[c for c, _ in MESSAGES])
def test_the_line_says_what_is_wrong(
    command: str, says: str, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        status = main(expand(command, files))
    except SystemExit as stop:
        status = stop.code
    assert status != 0
    assert says in capsys.readouterr().err


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path) -> None:
    """``anetrain data info F | head -1``: no error line, the status a shell tool killed by
    SIGPIPE gives (141)."""
    import subprocess
    import sys

    data = tmp_path / "t.bin"
    np.arange(1, 200, dtype=np.uint16).tofile(data)
    proc = subprocess.Popen(
        [sys.executable, "-m", "anetrain.cli", "data", "info", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before anything is written
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141
    assert err == b""


def test_a_bad_simulator_path_variable_is_one_line(
    monkeypatch: pytest.MonkeyPatch, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ANETRAIN_SIM_FAST", "maybe")
    assert main(expand("TRAIN --steps 1", files)) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    assert err.count("\n") == 1 and "ANETRAIN_SIM_FAST='maybe' is not a choice" in err, err


def test_data_too_short_to_validate_stops_before_the_first_step(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Validation runs at the last step, so a split without one window is refused up front
    (it once trained every step first), and the fix it names is one the CLI has."""
    (tmp_path / "m.toml").write_text(TOML)  # seq_len 32: a window is 33 tokens
    data = tmp_path / "short.bin"
    ids = np.arange(600, dtype="<u2") % 500 + 2  # no BOS: val is the last 5 %, 30 tokens
    data.write_bytes(ids.tobytes())
    out = tmp_path / "run"
    argv = ["train", "--config", str(tmp_path / "m.toml"), "--data", str(data), "--steps", "2"]
    argv += ["--accum", "1", "--sample-tokens", "0", "--no-progress", "--out", str(out)]
    assert main(argv) == 1
    assert capsys.readouterr().err == (
        f"anetrain: error: {data} [val]: has 30 tokens but a window needs seq_len + 1 = 33; use "
        "a bigger token file, or a model with a shorter seq_len (--config FILE.toml)\n"
    )
    assert not (out / "metrics.jsonl").exists()
