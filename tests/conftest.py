"""Shared test setup."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from anetrain.runtime import reset_compile_count


@pytest.fixture(autouse=True)
def _fresh_sim_compile_budget() -> Iterator[None]:
    """Each test starts with the simulator's per-process compile count at zero, as if it ran
    in its own process: the suite as a whole compiles far more than the 119 a process gets.
    Tests of the budget itself set up their own counts."""
    reset_compile_count("sim")
    yield
