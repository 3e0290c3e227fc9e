"""Without numba (the optional ``fast`` extra) the simulator runs on its NumPy path."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from anetrain import runtime
from anetrain.runtime import sim as sim_package
from anetrain.runtime.errors import BackendUnavailable
from anetrain.runtime.sim import SimBackend
from anetrain.runtime.sim import fast as fastpath
from anetrain.runtime.testing import conv_program


@pytest.fixture
def no_numba(monkeypatch):
    """numba (and the kernels module) made unimportable for this test."""
    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.delitem(sys.modules, "anetrain.runtime.sim.jit", raising=False)
    monkeypatch.delattr(sim_package, "jit", raising=False)
    fastpath._load.cache_clear()
    yield
    fastpath._load.cache_clear()


def test_without_numba_the_numpy_path_runs(no_numba, monkeypatch) -> None:
    monkeypatch.delenv(fastpath.ENV_VAR, raising=False)
    ok, reason = fastpath.fast_available()
    assert not ok and "anetrain[fast]" in reason
    backend = SimBackend()
    assert not backend.fast
    w = np.eye(4, dtype=np.float32) * 2
    kernel = runtime.compile(*conv_program(w, 8), backend=backend)
    x = np.arange(32, dtype=np.float32).reshape(4, 8) / 7
    np.testing.assert_array_equal(kernel(x)[0, :, 0], (x.astype(np.float16) * 2).astype(np.float32))


def test_requiring_the_fast_path_without_numba_names_the_fix(no_numba, monkeypatch) -> None:
    with pytest.raises(BackendUnavailable, match=r"anetrain\[fast\]"):
        SimBackend(fast=True)
    monkeypatch.setenv(fastpath.ENV_VAR, "1")
    with pytest.raises(BackendUnavailable, match="numba"):
        SimBackend()
