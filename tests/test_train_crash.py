"""kill -9 at random moments: the last checkpoint always loads, every resume works, no temp
file survives, and the final weights are bit-identical to an uninterrupted run.

The fast variant kills three times; ``-m slow`` kills 40 times (figures in docs/robustness.md).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from anetrain.runfolder import CKPT_LAST as LAST
from anetrain.train.checkpoint import load_checkpoint

TOML = "dim = 32\nn_layers = 1\nn_heads = 2\nhidden_dim = 64\nvocab_size = 512\nseq_len = 32\n"


def argv(config: Path, out: Path, resume: bool, steps: int) -> list[str]:
    cmd = [sys.executable, "-m", "anetrain.cli", "train", "--config", str(config)]
    cmd += ["--backend", "sim", "--steps", str(steps), "--accum", "1", "--ckpt-every", "1"]
    cmd += ["--eval-every", "4", "--sample-tokens", "0", "--no-progress", "--out", str(out)]
    return [*cmd, "--resume"] if resume else cmd


def step_losses(out: Path) -> list[float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["type"] == "step"]


def lines_in(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for_temp(out: Path, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> bool:
    """Busy-wait (a checkpoint write takes about a millisecond) for a temp file in ``out``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with os.scandir(out) as entries:
            if any(e.name.endswith(".tmp") for e in entries):
                return True
    return False


def kill_and_resume(tmp_path: Path, kills: int, steps: int, seed: int) -> dict[str, int]:
    config = tmp_path / "m.toml"
    config.write_text(TOML)
    reference = tmp_path / "straight"
    done = subprocess.run(argv(config, reference, False, steps), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rng = random.Random(seed)
    out = tmp_path / "killed"
    figures = {"kills": 0, "during_write": 0, "resumes": 0, "temps_left_by_kills": 0}
    figures["finished_before_kill"] = 0
    for _ in range(kills):
        resume = (out / LAST).exists()
        proc = subprocess.Popen(
            argv(config, out, resume, steps), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        start_lines = lines_in(out / "metrics.jsonl") if resume else 0
        deadline = time.monotonic() + 60
        # wait for the run to be training (a few records past where it started), then a
        # random moment, which often falls inside a checkpoint write (one per step)
        while lines_in(out / "metrics.jsonl") < start_lines + 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.005)
        if figures["kills"] % 2:  # inside an atomic write: as soon as its temp file shows
            figures["during_write"] += wait_for_temp(out, proc)
        else:
            time.sleep(rng.uniform(0, 0.1))
        if proc.poll() is not None:  # it finished first: start over to have something to kill
            figures["finished_before_kill"] += 1
            assert proc.returncode in (0, 1), proc.stderr.read()  # type: ignore[union-attr]
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        figures["kills"] += 1
        figures["temps_left_by_kills"] += len(list(out.glob(".*.tmp")))
        if (out / LAST).exists():
            assert load_checkpoint(out / LAST).step <= steps  # always loads after a kill
        figures["resumes"] += resume
    final = subprocess.run(
        argv(config, out, (out / LAST).exists(), steps), capture_output=True, text=True
    )
    if "already at step" not in final.stderr:
        assert final.returncode == 0, final.stderr
    assert not list(out.glob(".*.tmp")), "a temp file survived the next start"
    a, b = load_checkpoint(reference / LAST), load_checkpoint(out / LAST)
    assert a.step == b.step == steps
    assert np.array_equal(a.params.flat, b.params.flat)  # bit-identical
    assert a.adam_m is not None and b.adam_m is not None
    assert np.array_equal(a.adam_m.flat, b.adam_m.flat)
    assert step_losses(out) == step_losses(reference)
    return figures


def test_kill_9_at_random_moments_then_resume(tmp_path: Path) -> None:
    figures = kill_and_resume(tmp_path, kills=3, steps=150, seed=1)
    print(figures)
    assert figures["kills"] == 3 and figures["during_write"] >= 1, figures


@pytest.mark.slow
def test_kill_9_many_times(tmp_path: Path) -> None:
    figures = kill_and_resume(tmp_path, kills=40, steps=1500, seed=7)
    print(figures)
    assert figures["kills"] >= 30, figures
