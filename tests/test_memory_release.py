"""release_free_heap: freed heap pages leave RSS on glibc; elsewhere it says it did nothing."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from anetrain import memory

# in a fresh interpreter, so the heap's state is this script's: a freed 16 MiB mapping raises
# glibc's mmap threshold, the 4 MiB arrays after it come from the heap, in holes between small
# live arrays (so the heap's top cannot shrink by itself), and their pages stay resident
SCRIPT = """
import numpy as np
from anetrain import memory

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

np.ones(4 << 20, np.float32)
arrays, pins = [], []
for _ in range(24):
    arrays.append(np.ones(1 << 20, np.float32))
    pins.append(np.ones(1 << 14, np.float32))
del arrays
before = rss()
released = memory.release_free_heap()
print(released, before - rss())
"""


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc_trim"
)
def test_freed_heap_arrays_leave_rss() -> None:
    src = str(Path(memory.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    released, freed = out.stdout.split()
    assert released == "True"
    assert int(freed) > 48 << 20  # of the 96 MiB freed


def test_without_malloc_trim_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_libc", lambda: None)
    assert memory.release_free_heap() is False
