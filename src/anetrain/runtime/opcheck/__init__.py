"""Differential testing of the simulator's op semantics against coremltools (Apple's reference).

coremltools defines every MIL op in NumPy (``value_inference`` in its op definitions, iOS15 to
iOS18). :mod:`~anetrain.runtime.opcheck.cases` draws seeded random configurations of each op in
our registry (shapes, attributes, dtypes, some invalid on purpose), and
:mod:`~anetrain.runtime.opcheck.oracle` runs each on the simulator (tensor arguments fed at run
time, so nothing is folded away) and through coremltools, then compares: acceptance first
(both reject, fine; one rejects, only if :mod:`~anetrain.runtime.opcheck.differences` documents
why), then values (fp32 tight, fp16 within an ulp or two of the fp32 reference rounded once).
:mod:`~anetrain.runtime.opcheck.chains` does the same for random chains of view-like ops.
coremltools is imported lazily; the tests skip without it.
"""

from anetrain.runtime.opcheck.cases import GENERATORS, Case, draw_case
from anetrain.runtime.opcheck.chains import check_chain
from anetrain.runtime.opcheck.differences import DIFFERENCES, Difference
from anetrain.runtime.opcheck.oracle import Outcome, check_case

__all__ = [
    "DIFFERENCES",
    "GENERATORS",
    "Case",
    "Difference",
    "Outcome",
    "check_case",
    "check_chain",
    "draw_case",
]
