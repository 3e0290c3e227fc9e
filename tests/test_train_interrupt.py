"""Ctrl-C during `anetrain train` stops after the current step with a checkpoint saved."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from anetrain.train.checkpoint import load_checkpoint

TOML = """dim = 32
n_layers = 1
n_heads = 2
hidden_dim = 64
vocab_size = 512
seq_len = 32
"""


def test_sigint_saves_a_checkpoint_and_resume_continues(tmp_path: Path) -> None:
    config = tmp_path / "m.toml"
    config.write_text(TOML)
    out = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "anetrain.cli",
        "train",
        "--config",
        str(config),
        "--backend",
        "sim",
        "--steps",
        "100000",
        "--accum",
        "1",
        "--no-progress",
        "--sample-tokens",
        "0",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "Interrupted at step" in output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    stopped = summary["steps"]
    assert 3 <= stopped < 100000
    assert load_checkpoint(out / "ckpt_last.safetensors").step == stopped
    steps = [
        json.loads(x)["step"]
        for x in metrics.read_text().splitlines()
        if json.loads(x)["type"] == "step"
    ]
    assert steps == list(range(1, stopped + 1))
    resumed = subprocess.run(
        [*argv[:9], str(stopped + 2), *argv[10:], "--resume"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert load_checkpoint(out / "ckpt_last.safetensors").step == stopped + 2
