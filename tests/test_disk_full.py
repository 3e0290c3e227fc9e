"""A real full disk and a real read-only file system, on a small tmpfs (needs root to mount;
skipped with the reason otherwise, where test_train_robustness simulates ENOSPC instead).

The run fails with one line, its last checkpoint stays loadable, and once space is freed
``--resume`` continues where the checkpoint left off.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from anetrain.runfolder import CKPT_LAST as LAST
from anetrain.train.checkpoint import load_checkpoint

TOML = "dim = 32\nn_layers = 1\nn_heads = 2\nhidden_dim = 64\nvocab_size = 512\nseq_len = 32\n"


def _mount(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; ENOSPC is simulated in test_train_robustness")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = _mount(["-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)])
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def train(config: Path, out: Path, steps: int, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "anetrain.cli", "train", "--config", str(config)]
    cmd += ["--backend", "sim", "--steps", str(steps), "--accum", "1", "--ckpt-every", "5"]
    return [*cmd, "--sample-tokens", "0", "--no-progress", "--out", str(out), *extra]


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return filler


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("anetrain: error: "), result.stderr
    return lines[0]


def test_disk_fills_during_training_then_resume(small_disk: Path, tmp_path: Path) -> None:
    config = tmp_path / "m.toml"
    config.write_text(TOML)
    out = small_disk / "run"
    proc = subprocess.Popen(
        train(config, out, 100000), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not (out / LAST).exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    filler = fill(small_disk)
    _, stderr = proc.communicate(timeout=60)
    line = one_line_error(subprocess.CompletedProcess([], proc.returncode, "", stderr))
    assert "No space left on device" in line and "--resume" in line
    saved = load_checkpoint(out / LAST)  # the previous checkpoint is intact
    assert np.isfinite(saved.params.flat).all()
    assert not list(out.glob(".*.tmp"))
    filler.unlink()
    resumed = subprocess.run(train(config, out, saved.step + 3, "--resume"), capture_output=True)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(out / LAST).step == saved.step + 3
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "step"] == list(range(1, saved.step + 4))


def test_read_only_file_system(small_disk: Path, tmp_path: Path) -> None:
    config = tmp_path / "m.toml"
    config.write_text(TOML)
    out = small_disk / "run"
    assert subprocess.run(train(config, out, 5), capture_output=True).returncode == 0
    before = (out / LAST).read_bytes()
    assert _mount(["-o", "remount,ro", str(small_disk)]).returncode == 0
    try:
        line = one_line_error(
            subprocess.run(train(config, out, 8, "--resume"), capture_output=True, text=True)
        )
        assert "Read-only file system" in line
        fresh = subprocess.run(train(config, small_disk / "new", 3), capture_output=True, text=True)
        assert "Read-only file system" in one_line_error(fresh)
    finally:
        _mount(["-o", "remount,rw", str(small_disk)])
    assert (out / LAST).read_bytes() == before
    resumed = subprocess.run(train(config, out, 8, "--resume"), capture_output=True)
    assert resumed.returncode == 0 and load_checkpoint(out / LAST).step == 8
