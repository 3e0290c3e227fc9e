"""The compile-time model: fitted to two reported batch compiles, judged on three it was not
fitted to (M4 Max 20-step runs of both static trainers, the M5 256-channel conv probe)."""

from __future__ import annotations

import pytest

from anetrain.perfmodel.compile import checks, compile_model


def test_fit_reproduces_its_two_batches_and_predicts_the_others() -> None:
    model = compile_model()
    assert 5 < model.fixed_ms < 30 and 1 < model.ms_per_mb < 20  # physically plausible
    results = checks()
    assert len(results) == 3
    for what, modeled, reported in results:
        assert modeled == pytest.approx(reported, rel=0.15), what  # measured: +6%, +0.5%, +14%
