"""Differential test: the simulator against coremltools' own op definitions (value inference).

Every registry op gets seeded random configurations (shapes, attributes, dtypes, a few invalid
on purpose) and random chains of view-like ops test planning and aliasing. A disagreement fails
unless an entry of ``opcheck.DIFFERENCES`` documents it. ``scripts/opcheck.py`` runs the same
checks with thousands of cases per op (figures in docs/runtime.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("coremltools")

from anetrain.mil.ops import REGISTRY
from anetrain.runtime.opcheck import (
    DIFFERENCES,
    GENERATORS,
    check_case,
    check_chain,
    draw_case,
)
from anetrain.runtime.opcheck.oracle import compare
from anetrain.runtime.sim.ops import PLANNERS

CASES_PER_OP = 60
CHAINS = 150
DOCS = Path(__file__).resolve().parents[1] / "docs" / "runtime.md"


def test_every_registry_op_has_a_generator() -> None:
    assert set(GENERATORS) == set(REGISTRY) - {"const"}


@pytest.mark.parametrize("op", sorted(GENERATORS))
def test_op_agrees_with_coremltools(op: str) -> None:
    outcomes = [check_case(draw_case(op, seed)) for seed in range(CASES_PER_OP)]
    bad = [str(o) for o in outcomes if not o.ok]
    assert not bad, f"{len(bad)} disagreement(s):\n" + "\n".join(bad[:5])
    compared = sum(o.verdict == "agree" for o in outcomes)
    assert compared >= CASES_PER_OP // 2, f"only {compared} cases were compared by value"


def test_view_chains_agree_with_coremltools() -> None:
    bad = [str(o) for o in map(check_chain, range(CHAINS)) if not o.ok]
    assert not bad, "\n".join(bad[:5])


def test_the_check_catches_a_value_frozen_at_compile_time(monkeypatch) -> None:
    """The harness can fail: a transpose that copies its input at compile time is caught."""
    original = PLANNERS["transpose"]

    def frozen(op, ctx):
        original(op, ctx)
        var = op.outputs[0]
        ctx.values[var.name] = np.array(ctx.values[var.name])  # a stale copy

    monkeypatch.setitem(PLANNERS, "transpose", frozen)
    outcomes = [check_case(draw_case("transpose", seed)) for seed in range(20)]
    assert any(o.verdict == "disagree" for o in outcomes)
    assert not all(check_chain(seed).ok for seed in range(40))


def test_fp16_comparison_allows_one_ulp_for_elementwise_ops() -> None:
    ref = np.array([1.0, 2.0], np.float32)
    one_ulp = np.array([1.0 + 2**-10, 2.0], np.float16)
    two_ulps = np.array([1.0 + 2**-9, 2.0], np.float16)
    assert compare("exp", one_ulp, ref, fp16=True) is None
    assert compare("exp", two_ulps, ref, fp16=True) is not None
    assert compare("matmul", two_ulps, ref, fp16=True) is None
    assert compare("exp", np.array([np.nan, 2.0], np.float16), ref, fp16=True) is not None


def test_every_documented_difference_is_in_the_docs() -> None:
    text = DOCS.read_text("utf-8")
    missing = [d.key for d in DIFFERENCES if f"`{d.key}`" not in text]
    assert not missing, f"docs/runtime.md does not list: {missing}"
