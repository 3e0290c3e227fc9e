"""anetrain dashboard: state from run files, incremental tailing, charts, the CLI frame."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from anetrain.cli import main
from anetrain.dashboard.chart import bar_cells, buckets, hbar, loss_chart, sparkline
from anetrain.dashboard.live import follow
from anetrain.dashboard.state import PHASES, DashboardError, RunState, check_run_dir
from anetrain.dashboard.tail import JsonlTail
from anetrain.dashboard.view import Options, frame

PHASE_MS = {"kernels": 6.0, "io": 2.0, "classifier": 0.5, "elementwise": 0.5, "rmsnorm": 0.5}


def step(n: int, loss: float | None = 5.0, **extra: Any) -> dict[str, Any]:
    record = {
        "step": n,
        "loss": loss,
        "lr": 1e-3 * n,
        "grad_norm": 0.5,
        "loss_scale": 256.0,
        "skipped": False,
        "ms": 10.0,
        "tokens_per_s": 1000.0,
        "type": "step",
        **{f"{k}_ms": v for k, v in PHASE_MS.items()},
        "blas_wait_ms": 0.0,
    }
    record.update(extra)
    return record


def lines(*records: dict[str, Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def make_run(path: Path, metrics: str = "", steps: int = 10) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "model": {
            "dim": 32,
            "n_layers": 1,
            "n_heads": 2,
            "hidden_dim": 64,
            "vocab_size": 512,
            "seq_len": 32,
        },
        "train": {"steps": steps, "accum": 1, "lr": 3e-3, "warmup": 2, "backend": "sim"},
        "data": "/data/tokens.bin",
        "tokenizer": "builtin",
    }
    (path / "config.json").write_text(json.dumps(config))
    (path / "metrics.jsonl").write_text(metrics)
    return path


def append(path: Path, text: str) -> None:
    with open(path / "metrics.jsonl", "a") as f:
        f.write(text)


# ---- state -----------------------------------------------------------------------------------


def test_state_from_metrics_with_partial_malformed_and_null(tmp_path: Path) -> None:
    metrics = (
        lines(step(1, 6.0), step(2, 5.5))
        + "{not json\n"
        + lines(
            step(3, None, grad_norm=None, skipped=True, loss_scale=128.0),
            {"type": "val", "step": 3, "val_loss": 5.25},
            step(4, 5.0),
        )
        + '{"step": 5, "loss": 4.'  # the trainer is half-way through this line
    )
    state = RunState.open(make_run(tmp_path, metrics))
    assert [p.step for p in state.steps] == [1, 2, 3, 4]
    assert state.malformed == 1
    assert state.steps[2].loss is None and state.steps[2].grad_norm is None
    assert state.steps[2].skipped and state.skipped == 1
    assert state.last is not None and state.last.loss == 5.0
    assert state.best is not None and state.best.step == 4
    assert state.last_val is not None and state.last_val.val_loss == 5.25
    assert state.total_steps == 10
    assert state.ms_per_step == pytest.approx(10.0)
    assert state.tokens_per_s == pytest.approx(1000.0)
    assert state.eta_s == pytest.approx(6 * 10.0 / 1e3)
    assert state.loss_ema is not None and 5.0 < state.loss_ema < 6.0
    assert not state.finished


def test_non_finite_tokens_and_bad_records_are_handled(tmp_path: Path) -> None:
    metrics = (
        '{"type": "step", "step": 1, "loss": NaN, "grad_norm": Infinity, "ms": 10}\n'
        + lines({"type": "step", "step": "two"}, {"no_type": 1}, {"type": "future", "step": 9})
        + "[1, 2]\n\n"
    )
    state = RunState.open(make_run(tmp_path, metrics))
    assert len(state.steps) == 1
    assert state.steps[0].loss is None and state.steps[0].grad_norm is None
    assert state.malformed == 3  # bad step, untyped record, JSON that is not an object


def test_tail_appends_and_completes_partial_line(tmp_path: Path) -> None:
    run = make_run(tmp_path, lines(step(1), step(2)))
    state = RunState.open(run)
    assert len(state.steps) == 2
    assert not state.update()
    text = lines(step(3), step(4))
    append(run, text + lines(step(5))[:20])
    assert state.update()
    assert [p.step for p in state.steps] == [1, 2, 3, 4]
    append(run, lines(step(5))[20:])
    state.update()
    assert [p.step for p in state.steps] == [1, 2, 3, 4, 5]
    assert state.malformed == 0


def test_tail_reads_only_new_bytes(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(lines(step(1)))
    tail = JsonlTail(path)
    records, reset = tail.read()
    assert [r["step"] for r in records] == [1] and not reset
    offset = tail.offset
    assert offset == path.stat().st_size
    assert tail.read() == ([], False)
    with open(path, "a") as f:
        f.write(lines(step(2)) + '{"partial')
    records, _ = tail.read()
    assert [r["step"] for r in records] == [2]
    assert tail.pending == len('{"partial')


def test_truncated_file_starts_over(tmp_path: Path) -> None:
    run = make_run(tmp_path, lines(step(1), step(2), step(3)))
    state = RunState.open(run)
    (run / "metrics.jsonl").write_text(lines(step(1, 9.0)))  # a new run in the same folder
    state.update()
    assert [(p.step, p.loss) for p in state.steps] == [(1, 9.0)]


def test_repeated_steps_keep_the_later_record(tmp_path: Path) -> None:
    run = make_run(tmp_path, lines(step(1, 6.0), step(2, 5.0), step(3, 4.0), step(2, 5.5)))
    state = RunState.open(run)
    assert [(p.step, p.loss) for p in state.steps] == [(1, 6.0), (2, 5.5)]
    assert state.best is not None and state.best.loss == 5.5


def test_summary_older_than_config_is_ignored(tmp_path: Path) -> None:
    run = make_run(tmp_path, lines(step(1)))
    (run / "summary.json").write_text(json.dumps({"steps": 1, "sample": "old"}))
    old = (run / "config.json").stat().st_mtime_ns
    os.utime(run / "summary.json", ns=(old - 10**9, old - 10**9))
    state = RunState.open(run)
    assert not state.finished
    os.utime(run / "summary.json", ns=(old + 10**9, old + 10**9))
    state.update()
    assert state.finished and state.summary == {"steps": 1, "sample": "old"}


def test_summary_older_than_metrics_is_ignored(tmp_path: Path) -> None:
    """A resume rewrites metrics.jsonl before config.json: the old summary is stale already."""
    run = make_run(tmp_path, lines(step(1)))
    (run / "summary.json").write_text(json.dumps({"steps": 1}))
    stamp = (run / "summary.json").stat().st_mtime_ns
    os.utime(run / "config.json", ns=(stamp - 10**9, stamp - 10**9))
    os.utime(run / "metrics.jsonl", ns=(stamp + 10**9, stamp + 10**9))
    assert not RunState.open(run).finished


def test_rewritten_config_restarts_reading(tmp_path: Path) -> None:
    run = make_run(tmp_path, lines(step(1), step(2)))
    state = RunState.open(run)
    stamp = (run / "config.json").stat().st_mtime_ns + 10**9
    (run / "metrics.jsonl").write_text(lines(step(1, 7.0), step(2, 6.0), step(3, 5.0)))
    os.utime(run / "config.json", ns=(stamp, stamp))  # the trainer (re)started
    state.update()
    assert [p.loss for p in state.steps] == [7.0, 6.0, 5.0]
    assert state.train_s == pytest.approx(0.03) and state.tokens_seen == pytest.approx(30.0)


def test_phase_breakdown(tmp_path: Path) -> None:
    state = RunState.open(make_run(tmp_path, lines(step(1), step(2))))
    shares = {s.name: s for s in state.phase_breakdown()}
    assert list(shares) == [*PHASES, "other"]
    assert shares["kernels"].pct == pytest.approx(60.0)
    assert shares["io"].ms == pytest.approx(2.0)
    assert shares["other"].pct == pytest.approx(5.0)
    assert sum(s.pct for s in shares.values()) == pytest.approx(100.0)


def test_errors_for_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DashboardError, match="no such run folder"):
        check_run_dir(tmp_path / "nope")
    with pytest.raises(DashboardError, match="not a run folder"):
        check_run_dir(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DashboardError, match="not a folder"):
        check_run_dir(tmp_path / "file")


# ---- charts ----------------------------------------------------------------------------------


def test_sparkline_known_inputs() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([1, None, 3]) == "▁ █"
    assert sparkline([2.0, 2.0]) == "▄▄"  # constant: half height
    assert sparkline([]) == ""
    assert sparkline([None, float("nan")]) == "  "
    assert sparkline([0, 0, 7, 7], width=2) == "▁█"
    assert buckets([1.0, 3.0, None, 5.0], 2) == [2.0, 5.0]


def test_loss_chart_known_inputs() -> None:
    chart = loss_chart([(1, 0.0), (2, 1.0)], width=2, height=1)
    assert chart is not None
    assert chart.rows == ["▁█"] and (chart.lo, chart.hi) == (0.0, 1.0)
    chart = loss_chart([(1, 2.0), (2, 1.0), (3, 0.0)], [(2, 1.0)], width=3, height=2)
    assert chart is not None
    assert chart.rows == ["█● ", "██▁"]
    assert (chart.first, chart.last) == (1, 3)
    # fewer steps than columns: each step is repeated; the rest of the range is blank
    chart = loss_chart([(1, 1.0), (2, 0.0)], width=8, height=1, first=1, last=4)
    assert chart is not None and chart.rows == ["██▁▁    "]
    # more steps than columns: columns are means
    chart = loss_chart([(s, float(s % 2)) for s in range(1, 101)], width=10, height=1)
    assert chart is not None and len(set(chart.rows[0])) == 1
    assert loss_chart([(1, None)], width=4, height=2) is None


def test_bars() -> None:
    assert bar_cells([60, 30, 10], 10) == [6, 3, 1]
    assert sum(bar_cells([1, 1, 1], 10)) == 10
    assert bar_cells([0, 0], 5) == [0, 0]
    assert hbar(0.5, 4) == "██  "
    assert hbar(0.5, 1) == "▌" and hbar(1 / 8, 1) == "▏"  # eighths of a cell
    assert hbar(0.0, 3) == "   "


# ---- command ---------------------------------------------------------------------------------


def test_once_prints_key_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = lines(*[step(n, 6.0 - n / 10) for n in range(1, 8)])
    metrics += lines({"type": "val", "step": 5, "val_loss": 5.6}) + "garbage\n"
    run = make_run(tmp_path / "run", metrics, steps=20)
    assert main(["dashboard", str(run), "--once"]) == 0
    out = capsys.readouterr().out
    assert "step 7/20" in out
    assert "5.3000" in out  # last loss
    assert "5.6000" in out  # val loss
    for name in PHASES:
        assert name in out
    assert "dim 32" in out and "training" in out
    assert "1 malformed" in out


def test_once_on_new_run_shows_waiting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    assert main(["dashboard", str(run), "--once"]) == 0
    out = capsys.readouterr().out
    assert "Waiting for metrics" in out and "config.json" in out


def test_once_on_finished_run_shows_report_and_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_run(tmp_path / "run", lines(step(1, 6.0), step(2, 5.0)), steps=2)
    summary = {
        "steps": 2,
        "first_loss": 6.0,
        "final_loss": 5.0,
        "best_val_loss": None,
        "wall_s": 1.5,
        "compile_s": 0.25,
        "train_s": 1.0,
        "ms_per_step": 10.0,
        "tokens_per_s": 1000.0,
        "kernel_tflops": 0.002,
        "utilization_pct": 0.01,
        "chip": "m4",
        "backend": "sim",
        "interrupted": False,
        "sample": "Once upon a time there was a cat",
    }
    (run / "summary.json").write_text(json.dumps(summary))
    assert main(["dashboard", str(run), "--once"]) == 0
    out = capsys.readouterr().out
    assert "Efficiency Report" in out and "finished" in out
    assert "Once upon a time there was a cat" in out
    assert "6.0000 → 5.0000" in out


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, [], "no such run folder"),
        ("empty", [], "not a run folder"),
        ("run", ["--refresh", "0"], "--refresh must be"),
    ],
)
def test_cli_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: str | None,
    args: list[str],
    message: str,
) -> None:
    target = tmp_path / "x"
    if make == "empty":
        target.mkdir()
    elif make == "run":
        make_run(target)
    assert main(["dashboard", str(target), "--once", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("anetrain: error:") and message in err
    assert "\n" not in err


def test_follow_exits_after_summary_appears(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", lines(step(1)), steps=2)
    sleeps: list[float] = []

    def fake_sleep(seconds: float) -> None:  # the trainer writes while the dashboard sleeps
        sleeps.append(seconds)
        if len(sleeps) == 1:
            append(run, lines(step(2, 4.5)))
        elif len(sleeps) == 2:
            (run / "summary.json").write_text(json.dumps({"steps": 2, "sample": "The end"}))

    out = io.StringIO()
    console = Console(file=out, width=100, height=40)
    assert follow(run, console, refresh=0.01, linger=0.0, sleep=fake_sleep) == 0
    assert len(sleeps) == 2
    text = out.getvalue()
    assert "The end" in text and "step 2/2" in text


def test_follow_keeps_showing_a_finished_run_until_ctrl_c(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", lines(step(1)), steps=1)
    (run / "summary.json").write_text(json.dumps({"steps": 1}))
    calls = []

    def fake_sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 3:
            raise KeyboardInterrupt

    out = io.StringIO()
    console = Console(file=out, width=100, height=40)
    assert follow(run, console, refresh=0.01, linger=0.0, sleep=fake_sleep) == 0
    assert len(calls) == 3 and "stopped following" in out.getvalue()


def test_short_screen_drops_phases_before_the_report(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", lines(step(1), step(2)), steps=2)
    (run / "summary.json").write_text(json.dumps({"steps": 2, "sample": "Once", "wall_s": 1.0}))
    state = RunState.open(run)
    for height, phases in ((24, False), (60, True)):
        console = Console(file=io.StringIO(), width=80, height=height)
        layout, rows = frame(state, console, 0.0, Options(), height=height)
        assert rows == height
        console.print(layout, height=height)
        text = console.file.getvalue()  # type: ignore[attr-defined]
        assert "Efficiency Report" in text and "Sample" in text
        assert ("Step time by phase" in text) == phases


def test_end_to_end_tiny_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "m.toml"
    config.write_text(
        "dim = 32\nn_layers = 1\nn_heads = 2\nhidden_dim = 64\nvocab_size = 512\nseq_len = 32\n"
    )
    out = tmp_path / "run"
    argv = ["train", "--config", str(config), "--steps", "3", "--accum", "1"]
    argv += ["--backend", "sim", "--out", str(out), "--no-progress", "--sample-tokens", "5"]
    assert main(argv) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert main(["dashboard", str(out), "--once"]) == 0
    text = capsys.readouterr().out
    assert "step 3/3" in text and "finished" in text
    assert f"{summary['final_loss']:.4f}" in text
    assert summary["sample"].split()[0] in text
    assert "kernels" in text and "Efficiency Report" in text


def test_static_runs_show_compile_share_and_restarts(tmp_path: Path) -> None:
    """Batch records (compile after each step) and restart records of a static run: the
    compile share is compile / (compile + train); a resumed run's repeated records count once."""
    from anetrain.dashboard.state import RunState
    from anetrain.dashboard.view import report_rows

    (tmp_path / "config.json").write_text(json.dumps({"model": {}, "train": {}}))
    lines = []
    for step in (1, 2, 2):  # step 2 repeated by the process after the restart
        lines.append({"type": "step", "step": step, "loss": 5.0, "ms": 300.0})
        lines.append({"type": "batch", "step": step, "compile_ms": 100.0, "train_ms": 300.0})
    lines.append({"type": "restart", "step": 2, "compiles": 44})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    state = RunState.open(tmp_path)
    assert state.compile_s == pytest.approx(0.2)
    assert state.compile_share == pytest.approx(0.2 / (0.2 + 0.6))
    assert state.restart_steps == {2}
    rows = dict(report_rows({"compile_s": 1.0, "wall_s": 4.0, "compile_pct": 25.0,
                             "compiles_per_batch": 20, "restarts": 3}))  # fmt: skip
    assert rows["Compile share"] == "25.0% of wall (3 exec() restarts)"
