"""Every benchmark script refuses nonsense arguments with one error line (no traceback, no run):
sizes and counts below 1, unknown models, options that need another."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

NONSENSE = [
    ("conv_chain.py", ["--depth", "0"], "--depth must be at least 1"),
    ("conv_chain.py", ["--channels", "-3"], "--channels must be at least 1"),
    ("conv_chain.py", ["--spatial", "0"], "--spatial must be at least 1"),
    ("conv_chain.py", ["--samples", "0"], "--samples must be at least 1"),
    ("conv_chain.py", ["--threads", "0"], "--threads must be at least 1"),
    ("data_parallel.py", ["--rounds", "0"], "--rounds be at least 1"),
    ("data_parallel.py", ["--steps", "5"], "warm-up steps"),
    ("data_parallel.py", ["--windows", "3"], "--windows must be even"),
    ("data_parallel.py", ["--model", "nope"], "unknown model config 'nope'"),
    ("peak_rss.py", ["--model", "nope"], "unknown model config 'nope'"),
    ("peak_rss.py", ["--target-gb", "-1"], "--target-gb above 0"),
    ("train_step.py", ["--ane-extras"], "--ane-extras needs --pipeline static"),
]


@pytest.mark.parametrize(
    ("script", "argv", "message"), NONSENSE, ids=[f"{s} {' '.join(a)}" for s, a, _ in NONSENSE]
)
def test_nonsense_is_refused_with_one_line(script: str, argv: list[str], message: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and not proc.stdout, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr
