"""A live terminal dashboard for training runs (``anetrain dashboard RUN_DIR``).

The data side (:mod:`.tail`, :mod:`.state`, :mod:`.chart`) is plain Python and returns plain
values and strings; only :mod:`.view` and :mod:`.live` know about rich.
"""

from __future__ import annotations

from anetrain.dashboard.state import DashboardError, RunState, StepPoint, ValPoint

__all__ = ["DashboardError", "RunState", "StepPoint", "ValPoint"]
