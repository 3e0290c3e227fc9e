"""Fit the engine parameters to measured rows (least squares on log time), cross-validate by
leaving one table out at a time, and score any parameter set against the rows.

Fitted, in log space, within physical ranges (:data:`RANGES`): the on-chip feed rate, the
big-op feed as a fraction of it, the per-op cost, the share of the SoC memory bandwidth the
engine draws (at most all of it), and one dispatch per measured machine. Not fitted: the compute
roof and INT8 factor (rated figures), the SRAM capacity (the chip profile) and the core buffer
(assumed). ``scipy.optimize.least_squares`` when SciPy is installed, else a small
Levenberg-Marquardt in NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from anetrain.hardware.chips import get_chip
from anetrain.perfmodel.params import MIB, PerfParams
from anetrain.perfmodel.reference import RefRow
from anetrain.perfmodel.roofline import OpTable
from anetrain.perfmodel.specs import EngineFit, base_params

SHARED = ("sram_gbps", "big_op_gbps", "per_op_us", "dram_share")
# physical ranges: on-chip feeds between 5 GB/s and 10 TB/s (a big op is never fed faster
# than a small one: big_op_gbps is capped at sram_gbps); per-op cost up to 20 us; the engine
# draws at most the SoC's memory bandwidth; dispatch and floor up to 3 ms
RANGES: dict[str, tuple[float, float]] = {
    "sram_gbps": (50.0, 10000.0),
    "big_op_gbps": (5.0, 10000.0),
    "per_op_us": (1e-3, 20.0),
    "dram_share": (0.02, 1.0),
    "dispatch_us": (1.0, 3000.0),
    "floor_us": (1.0, 3000.0),
}
# starting points (sram, big_op, per_op, dram share, dispatch, floor): the rows leave some
# directions flat (a feed no op is bound by), so several starts guard against a local minimum
STARTS = tuple(
    (sram, big, per_op, share, dispatch, floor)
    for sram, big in ((200.0, 40.0), (2000.0, 60.0))
    for per_op, share in ((0.05, 0.9), (1.0, 0.3))
    for dispatch, floor in ((150.0, 100.0), (80.0, 300.0))
)


@dataclass(frozen=True)
class RowError:
    group: str
    label: str
    measured_ms: float
    predicted_ms: float
    weight_bytes: int = 0
    chip: str = ""
    dram_bytes: int = 0  # modeled bytes crossing DRAM per eval

    @property
    def pct(self) -> float:
        """Signed error of the prediction, in % of the measurement."""
        return (self.predicted_ms / self.measured_ms - 1.0) * 100.0

    @property
    def log_ratio(self) -> float:
        return math.log(self.predicted_ms / self.measured_ms)

    @property
    def implied_dram_gbps(self) -> float:
        """DRAM bandwidth the model needs to have moved its bytes in the measured time."""
        return self.dram_bytes / (self.measured_ms * 1e6)


@dataclass(frozen=True)
class FitMetrics:
    rows: int
    rms_log: float  # root mean square of ln(predicted / measured)
    median_abs_pct: float
    max_abs_pct: float
    within_50pct: int  # rows predicted within +-50%

    def to_dict(self) -> dict[str, float | int]:
        return {
            "rows": self.rows,
            "rms_log_error": round(self.rms_log, 4),
            "median_abs_error_pct": round(self.median_abs_pct, 1),
            "max_abs_error_pct": round(self.max_abs_pct, 1),
            "rows_within_50pct": self.within_50pct,
        }


@dataclass(frozen=True)
class FitResult:
    engine: EngineFit
    params: dict[str, PerfParams]  # per fitted chip
    errors: tuple[RowError, ...]
    metrics: FitMetrics
    method: str  # "scipy" or "numpy"
    at_bound: tuple[str, ...]  # fitted parameters that ended at an end of their range


def _chip_params(rows: Sequence[RefRow], engine: EngineFit, sram_mib: dict[str, float] | None):
    out = {}
    for chip in engine.dispatch_us:
        p = base_params(chip, engine)
        mib = (sram_mib or {}).get(chip, get_chip(chip).sram_bytes / MIB)
        out[chip] = replace(p, sram_mib=mib)
    return out


def score(
    rows: Sequence[RefRow], params: dict[str, PerfParams] | PerfParams
) -> tuple[RowError, ...]:
    """Predicted vs measured for every row (``params`` per chip, or one set for all rows)."""
    per_row = [params if isinstance(params, PerfParams) else params[r.chip] for r in rows]
    table = OpTable([r.cost for r in rows], per_row)
    total, _, _ = table.ns(per_row)
    dram = table.dram_bytes()
    return tuple(
        RowError(
            r.group, r.label, r.measured_ms, float(t) / 1e6, r.cost.weight_bytes, r.chip, int(d)
        )
        for r, t, d in zip(rows, total, dram, strict=True)
    )


def metrics(errors: Sequence[RowError]) -> FitMetrics:
    logs = np.array([e.log_ratio for e in errors])
    pcts = np.abs([e.pct for e in errors])
    return FitMetrics(
        rows=len(errors),
        rms_log=float(np.sqrt(np.mean(logs**2))),
        median_abs_pct=float(np.median(pcts)),
        max_abs_pct=float(np.max(pcts)),
        within_50pct=int(np.sum(pcts <= 50.0)),
    )


class _Problem:
    """log-space parameter vector <-> EngineFit, and the residuals of all rows."""

    def __init__(self, rows: Sequence[RefRow], sram_mib: dict[str, float] | None) -> None:
        self.rows = list(rows)
        self.chips = list(dict.fromkeys(r.chip for r in rows))
        self.names = [
            *SHARED,
            *(f"dispatch_us[{c}]" for c in self.chips),
            *(f"floor_us[{c}]" for c in self.chips),
        ]
        keys = [*SHARED, *("dispatch_us" for _ in self.chips), *("floor_us" for _ in self.chips)]
        self.lower = np.log([RANGES[k][0] for k in keys])
        self.upper = np.log([RANGES[k][1] for k in keys])
        self.sram_mib = sram_mib
        probe = self.engine(self.starts()[0])
        base = _chip_params(rows, probe, sram_mib)
        self.table = OpTable([r.cost for r in rows], [base[r.chip] for r in rows])
        self.log_measured = np.log([r.measured_ms for r in rows])

    def engine(self, u: np.ndarray) -> EngineFit:
        v = np.exp(u)
        n = len(self.chips)
        dispatch = {c: float(x) for c, x in zip(self.chips, v[4 : 4 + n], strict=True)}
        floor = {c: float(x) for c, x in zip(self.chips, v[4 + n :], strict=True)}
        return EngineFit(float(v[0]), float(v[1]), float(v[2]), float(v[3]), dispatch, floor)

    def residuals(self, u: np.ndarray) -> np.ndarray:
        params = _chip_params(self.rows, self.engine(u), self.sram_mib)
        total, _, _ = self.table.ns([params[r.chip] for r in self.rows])
        return np.log(total / 1e6) - self.log_measured

    def starts(self) -> list[np.ndarray]:
        n = len(self.chips)
        return [np.log([*s[:4], *([s[4]] * n), *([s[5]] * n)]) for s in STARTS]


def _lm_numpy(
    fun: Callable[[np.ndarray], np.ndarray], u0: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Levenberg-Marquardt with forward-difference Jacobian, clipped to the bounds."""
    u = np.clip(u0, lo, hi)
    r = fun(u)
    cost, lam = float(r @ r), 1e-2
    for _ in range(300):
        jac = np.empty((r.size, u.size))
        for k in range(u.size):
            du = np.zeros_like(u)
            du[k] = 1e-6 if u[k] + 1e-6 <= hi[k] else -1e-6
            jac[:, k] = (fun(u + du) - r) / du[k]
        a, g = jac.T @ jac, jac.T @ r
        done = False
        while lam < 1e12:
            step = np.linalg.solve(a + lam * (np.diag(np.diag(a)) + 1e-9 * np.eye(u.size)), -g)
            trial = np.clip(u + step, lo, hi)
            r_trial = fun(trial)
            c_trial = float(r_trial @ r_trial)
            if c_trial < cost:
                done = cost - c_trial < 1e-12 * max(cost, 1e-30)
                u, r, cost, lam = trial, r_trial, c_trial, max(lam / 3, 1e-12)
                break
            lam *= 4
        else:
            break
        if done:
            break
    return u


def scipy_available() -> bool:
    try:
        import scipy.optimize  # noqa: F401
    except ImportError:
        return False
    return True


def fit(
    rows: Sequence[RefRow],
    *,
    use_scipy: bool | None = None,
    sram_mib: dict[str, float] | None = None,
) -> FitResult:
    """Fit the engine to ``rows`` (each on its own chip); ``sram_mib`` overrides the chip
    profiles' SRAM capacity per chip (a custom profile)."""
    use_scipy = scipy_available() if use_scipy is None else use_scipy
    prob = _Problem(rows, sram_mib)
    lo, hi = prob.lower, prob.upper
    best: tuple[float, np.ndarray] | None = None
    for u0 in prob.starts():
        u0 = np.clip(u0, lo + 1e-9, hi - 1e-9)
        if use_scipy:
            from scipy.optimize import least_squares

            u = least_squares(prob.residuals, u0, bounds=(lo, hi), x_scale="jac").x
        else:
            u = _lm_numpy(prob.residuals, u0, lo, hi)
        r = prob.residuals(u)
        if best is None or float(r @ r) < best[0]:
            best = (float(r @ r), u)
    assert best is not None
    u = best[1]
    engine = prob.engine(u)
    params = _chip_params(rows, engine, sram_mib)
    errors = score(rows, params)
    near = np.abs(u - lo) < 1e-3 * (hi - lo)
    near |= np.abs(u - hi) < 1e-3 * (hi - lo)
    at_bound = tuple(n for n, b in zip(prob.names, near, strict=True) if b)
    return FitResult(
        engine, params, errors, metrics(errors), "scipy" if use_scipy else "numpy", at_bound
    )


@dataclass(frozen=True)
class HeldOut:
    """One fold of leave-one-table-out cross-validation."""

    group: str
    errors: tuple[RowError, ...]  # the held-out table, predicted by a fit to the others
    metrics: FitMetrics
    at_bound: tuple[str, ...]


def cross_validate(rows: Sequence[RefRow], use_scipy: bool | None = None) -> list[HeldOut]:
    """Fit to all tables but one, predict that one; for every table."""
    groups = list(dict.fromkeys(r.group for r in rows))
    folds = []
    for g in groups:
        train = [r for r in rows if r.group != g]
        test = [r for r in rows if r.group == g]
        result = fit(train, use_scipy=use_scipy)
        engine = result.engine
        missing = {r.chip for r in test} - set(engine.dispatch_us)
        if missing:  # the held-out table is its machine's only one: dispatch as for other chips
            extra = {c: base_params(c, engine).dispatch_us for c in missing}
            engine = replace(engine, dispatch_us={**engine.dispatch_us, **extra})
        errs = score(test, _chip_params(test, engine, None))
        folds.append(HeldOut(g, errs, metrics(errs), result.at_bound))
    return folds
