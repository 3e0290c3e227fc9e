"""Data-parallel training under torchrun, on 127.0.0.1 only (gloo pinned to the loopback).

The oracle is the single process: 2 ranks x 2 windows must train like 1 process x 4 windows.
Bit-identical where the reduction order allows it: with one window per rank the step gradient
is ``g0 + g1`` either way, and every tensor but the embedding comes out bit for bit (the
embedding takes two additions per window, classifier then input rows, and one process
interleaves them across windows). With two windows per rank it does not: the ranks sum
``(g0 + g1) + (g2 + g3)`` where one process sums ``((g0 + g1) + g2) + g3`` in fp32. So:

* fp32 kernels, 20 steps: losses and final weights within 1e-6 relative (measured ~5e-8 and
  ~8e-8);
* fp16 kernels (the default, what the ANE runs), 20 steps: the one-ulp gradient differences flip
  fp16 roundings of the staged weights and the runs drift apart, so the bound is looser: losses
  within 1e-5 relative, weights within 1e-3 relative L2 (measured ~1.5e-6 and ~1.1e-4).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from anetrain.model.config import load_config
from anetrain.model.params import Params
from anetrain.runfolder import CKPT_LAST, METRICS, SUMMARY
from anetrain.train.checkpoint import load_checkpoint
from anetrain.train.distributed import loopback_launcher

pytest.importorskip("torch.distributed")

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
TRAIN = ["train", "--backend", "sim", "--no-progress", "--sample-tokens", "0"]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env.update(loopback_launcher(1)[1], COLUMNS="200", **extra)
    return env


def _torchrun(nproc: int, *args: str) -> list[str]:
    return [*loopback_launcher(nproc)[0], *args]


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _steps(run: Path) -> list[dict]:
    lines = (run / METRICS).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "step"]


@pytest.fixture(scope="module")
def worker_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """tests/dp_worker.py on one process with 4 windows and on 2 ranks with 2 windows each,
    then the 2-rank run's 10-step checkpoint resumed on one process."""
    root = tmp_path_factory.mktemp("dp")
    single, ranks = root / "single", root / "ranks"
    worker = str(TESTS / "dp_worker.py")
    _run([sys.executable, worker, str(single), "4"])
    _run(_torchrun(2, worker, str(ranks), "4"))
    _run([sys.executable, worker, str(single), "4", "--resume-half", str(ranks / "half")])
    return single, ranks


def test_one_window_per_rank_gives_the_single_process_gradient_bit_for_bit(worker_runs) -> None:
    single, ranks = worker_runs
    cfg = load_config("tiny")
    one, two = (Params(cfg, np.load(d / "grads1.npy")) for d in (single, ranks))
    for name in one:
        if name == "embed":  # two additions per window: the order differs (module docstring)
            assert _rel(two[name], one[name]) < 1e-6
        else:
            assert np.array_equal(one[name], two[name]), name


def test_overlapping_the_sums_with_the_backward_changes_no_bit(worker_runs) -> None:
    _, ranks = worker_runs
    assert np.array_equal(np.load(ranks / "grads1.npy"), np.load(ranks / "grads1-overlap.npy"))
    assert np.any(np.load(ranks / "grads1.npy"))


def test_two_ranks_train_like_one_process_with_fp32_kernels(worker_runs) -> None:
    single, ranks = worker_runs
    losses = [np.array(json.loads((d / "losses.json").read_text())) for d in (single, ranks)]
    assert len(losses[0]) == len(losses[1]) == 20
    assert np.abs(losses[1] / losses[0] - 1).max() < 1e-6
    assert _rel(np.load(ranks / "final.npy"), np.load(single / "final.npy")) < 1e-6


def test_resume_on_another_world_size_reshards_the_same_window_stream(worker_runs) -> None:
    """10 steps on 2 ranks, then 10 on one process == 20 on one process."""
    single, _ = worker_runs
    straight = np.array(json.loads((single / "losses.json").read_text()))
    resumed = np.array(json.loads((single / "resumed.json").read_text()))
    assert len(resumed) == 10
    assert np.abs(resumed / straight[10:] - 1).max() < 1e-6
    assert _rel(np.load(single / "resumed.npy"), np.load(single / "final.npy")) < 1e-6


def test_diverged_ranks_are_named_before_a_checkpoint(worker_runs) -> None:
    _, ranks = worker_runs
    message = (ranks / "mismatch.txt").read_text()
    assert message.startswith("rank 0/2: rank 1 holds different parameters than rank 0")
    assert "no checkpoint was written" in message


def test_resume_without_a_checkpoint_stops_every_rank(worker_runs) -> None:
    _, ranks = worker_runs
    rank0 = (ranks / "no-checkpoint-rank0.txt").read_text()
    rank1 = (ranks / "no-checkpoint-rank1.txt").read_text()
    assert rank0.startswith("--resume: no checkpoint at ") and "nothing-here" in rank0
    assert rank1 == f"rank 1/2: rank 0 could not resume: {rank0}"


def test_cli_two_ranks_match_one_process_and_only_rank_0_writes(tmp_path: Path) -> None:
    """`torchrun -m anetrain train`: the tiny model, 20 steps, fp16 sim kernels."""
    common = [*TRAIN, "--steps", "20", "--eval-every", "10", "--ckpt-every", "10"]
    single, ranks = tmp_path / "single", tmp_path / "ranks"
    _run([sys.executable, "-m", "anetrain", *common, "--accum", "4", "--out", str(single)])
    out = _run(_torchrun(2, "-m", "anetrain", *common, "--accum", "2", "--out", str(ranks)))
    assert "x 2 ranks (4 windows per step)" in out.stdout
    assert "Data parallel" in out.stdout and "all-reduce" in out.stdout
    assert out.stdout.count("Efficiency Report") == 1  # rank 1 is silent

    one, two = _steps(single), _steps(ranks)
    assert [r["step"] for r in two] == list(range(1, 21))
    assert all(r["comm_ms"] > 0 for r in two) and all(r["comm_ms"] == 0 for r in one)
    loss1, loss2 = (np.array([r["loss"] for r in x]) for x in (one, two))
    # the first step: the same weights and windows; window losses summed in another float64 order
    assert loss2[0] == pytest.approx(loss1[0], rel=1e-15, abs=0)
    assert np.abs(loss2 / loss1 - 1).max() < 1e-5
    w1, w2 = (load_checkpoint(d / CKPT_LAST) for d in (single, ranks))
    assert w2.step == 20 and w2.data["windows_drawn"] == w1.data["windows_drawn"] == 80
    assert _rel(w2.params.flat, w1.params.flat) < 1e-3

    summary = json.loads((ranks / SUMMARY).read_text())
    assert summary["world_size"] == 2 and summary["windows_per_step"] == 4
    assert summary["comm_bytes_per_step"] == 4 * w1.params.flat.size  # ring: 2(W-1)/W x 4 B
    names = {p.name for p in ranks.iterdir()}
    assert names == {p.name for p in single.iterdir()}


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    for pid in children:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in env:
            return int(pid)
    raise AssertionError(f"no rank {rank} among {children}")


def _start_long_run(out: Path, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    args = [*TRAIN, "--accum", "1", "--eval-every", "1000", "--ckpt-every", "5", "--out", str(out)]
    argv = _torchrun(2, "-m", "anetrain", *args, *extra)
    proc = subprocess.Popen(
        [*argv, "--steps", "100000"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 90
    while not ((out / CKPT_LAST).exists() and len(_lines(out)) >= 8):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    return proc, argv


def _lines(out: Path) -> list[str]:
    path = out / METRICS
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds ranks through /proc")
def test_killing_a_rank_ends_the_run_clearly_and_resume_continues(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc, argv = _start_long_run(out)
    os.kill(_rank_pid(proc, 1), signal.SIGKILL)
    killed = time.monotonic()
    output, _ = proc.communicate(timeout=60)
    assert time.monotonic() - killed < 30  # measured: under a second
    assert proc.returncode != 0
    assert "anetrain: error: rank 0/2:" in output
    # rank 0 sees the closed connection, or torchrun's SIGTERM first (a loaded machine)
    assert "another rank died" in output or "another rank failed" in output
    assert "rerun the same command with --resume" in output

    ckpt = load_checkpoint(out / CKPT_LAST)  # intact (CRC-checked)
    assert ckpt.step >= 5 and ckpt.step % 5 == 0
    _run([*argv, "--steps", str(ckpt.step + 3), "--resume"])
    assert load_checkpoint(out / CKPT_LAST).step == ckpt.step + 3
    assert [r["step"] for r in _steps(out)] == list(range(1, ckpt.step + 4))


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds ranks through /proc")
def test_a_hung_rank_ends_the_run_after_the_timeout(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc, _ = _start_long_run(out, "--dist-timeout", "3")
    rank0, rank1 = _rank_pid(proc, 0), _rank_pid(proc, 1)
    os.kill(rank1, signal.SIGSTOP)  # alive, silent
    stopped = time.monotonic()
    try:
        while Path(f"/proc/{rank0}").exists() and time.monotonic() - stopped < 60:
            time.sleep(0.05)
        waited = time.monotonic() - stopped
    finally:
        os.kill(rank1, signal.SIGCONT)  # let it take torchrun's SIGTERM
    output, _ = proc.communicate(timeout=60)
    assert 3 <= waited < 20
    assert proc.returncode != 0
    # rank 0 waits in whichever collective rank 1 was stopped before: the gradient all-reduce,
    # or every 5th step the checkpoint checksum
    hung = r"rank 0/2: (.+?) failed \(.+?\): another rank died, hung past the 3 s timeout"
    failed = re.search(hung, output)
    assert failed, output
    assert failed[1] in {"the gradient all-reduce", "the checkpoint checksum"}, output
    load_checkpoint(out / CKPT_LAST)


@pytest.mark.parametrize("dropout", ["0", "0.3"])
def test_lora_two_ranks_train_like_one_process(tmp_path: Path, dropout: str) -> None:
    """LoRA rank 4 on a tiny random Qwen3, fp32 kernels, 6 steps: 2 ranks x 1 window == 1
    process x 2 windows bit for bit. With one window per rank the step gradient is ``g0 + g1``
    either way, and LoRA has no embedding gradient (the one tensor that differs above). With
    dropout too: a window's masks follow its index in the shared window stream, not the rank
    that trains it."""
    from anetrain.data.tokens import write_tokens
    from hf_models import save_fp16_folder

    base, _, _ = save_fp16_folder(tmp_path / "hf", "qwen3")
    tokens = tmp_path / "t.bin"
    write_tokens(tokens, np.random.default_rng(1).integers(0, 300, 4000))
    worker = [str(TESTS / "dp_lora_worker.py"), str(base), str(tokens)]
    single, ranks = tmp_path / "single", tmp_path / "ranks"
    _run([sys.executable, *worker, str(single), "2", dropout])
    _run(_torchrun(2, *worker, str(ranks), "2", dropout))
    losses = [json.loads((d / "losses.json").read_text()) for d in (single, ranks)]
    assert len(losses[0]) == 6 and losses[1] == losses[0]
    for name in ("adapters.npy", "moments.npy"):
        one, two = np.load(single / name), np.load(ranks / name)
        assert np.any(one) and np.array_equal(two, one), name
