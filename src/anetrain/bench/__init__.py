"""``anetrain bench``: the original benchmark programs, measured on the ANE or modeled on sim.

Suites (:mod:`.convs`, :mod:`.int8`, :mod:`.latency`, :mod:`.train`) take a :class:`Runner`
and an ``emit(line)`` callback and return a :class:`SuiteResult` (JSON rows, summary, plot).
See docs/bench.md.
"""

from anetrain.bench.result import PlotSpec, Series, SuiteResult
from anetrain.bench.runner import Iterations, Runner, Timing

__all__ = ["Iterations", "PlotSpec", "Runner", "Series", "SuiteResult", "Timing"]
