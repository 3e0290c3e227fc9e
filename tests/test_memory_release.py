"""Giving memory back: freed heap pages (glibc malloc_trim) and the pages of buffers that hold
nothing between uses (madvise); where the call does not exist, each says it did nothing."""

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


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(sys.platform != "linux", reason="RSS from /proc, zeros from MADV_DONTNEED")
def test_released_pages_leave_rss_and_read_back_as_zeros() -> None:
    import numpy as np

    a = np.ones(16 << 20, np.float32)  # 64 MiB, resident
    strided = np.ones((1 << 10, 1 << 10), np.float32)[:, ::2]  # not contiguous: left alone
    before = _rss()
    released = memory.release_pages([a, strided])
    assert released >= a.nbytes - 2 * 4096  # all but the partial pages at the ends
    assert before - _rss() > 48 << 20
    assert not a[1024:-1024].any()  # whole pages inside: zeros (the contents are undefined)
    assert strided.all()
    a[...] = 2.0  # usable again, pages come back
    assert (a == 2.0).all()


def test_without_madvise_release_pages_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    monkeypatch.setattr(memory, "_madvise", lambda: None)
    a = np.ones(1 << 20, np.float32)
    assert memory.release_pages([a]) == 0
    assert a.all()
