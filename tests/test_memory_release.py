"""release_free_heap: freed heap pages leave RSS on glibc; elsewhere it says it did nothing."""

from __future__ import annotations

import platform
import sys

import numpy as np
import pytest

from anetrain import memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc_trim"
)
def test_freed_heap_arrays_leave_rss() -> None:
    # a freed 16 MiB mapping raises glibc's mmap threshold: the 4 MiB arrays after it come
    # from the heap, whose pages stay resident after the arrays are freed
    np.ones(4 << 20, np.float32)
    arrays, pins = [], []
    for _ in range(24):  # 96 MiB in holes between small live arrays, so the heap's top stays
        arrays.append(np.ones(1 << 20, np.float32))
        pins.append(np.ones(1 << 14, np.float32))
    del arrays
    before = _rss_bytes()
    assert memory.release_free_heap() is True
    after = _rss_bytes()
    assert before - after > 48 << 20, (before, after)
    del pins


def test_without_malloc_trim_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_libc", lambda: None)
    assert memory.release_free_heap() is False
