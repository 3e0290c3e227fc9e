"""NumPy implementations of every op in the MIL registry, as planners.

A planner ``plan(op, ctx)`` runs once at compile time: it looks up its argument arrays, binds
or allocates its output, and appends a closure to ``ctx.steps`` (via ``ctx.emit``).
"""

from __future__ import annotations

from collections.abc import Callable

from anetrain.mil.ir import Operation
from anetrain.runtime.sim.context import PlanContext
from anetrain.runtime.sim.ops import attention, elementwise, linear, quant, reduce, shape

Planner = Callable[[Operation, PlanContext], None]

PLANNERS: dict[str, Planner] = {
    **elementwise.PLANNERS,
    **reduce.PLANNERS,
    **shape.PLANNERS,
    **linear.PLANNERS,
    **attention.PLANNERS,
    **quant.PLANNERS,
}

__all__ = ["PLANNERS", "Planner"]
