"""Fit the roofline parameters of the reference chip to measured rows (least squares on
log time), and score any parameter set against them.

Seven continuous parameters are fitted in log space (compute roof, INT8 factor, SRAM/DRAM
bandwidth ratio, DRAM bandwidth, dispatch and per-op cost, spill factor) with
``scipy.optimize.least_squares`` when SciPy is installed, else a small Levenberg-Marquardt in
NumPy. The SRAM capacity moves the cliff between measured weight sizes, so it is chosen by
trying each gap between them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from anetrain.perfmodel.params import MIB, PerfParams
from anetrain.perfmodel.reference import RefRow
from anetrain.perfmodel.roofline import predict
from anetrain.perfmodel.specs import REFERENCE_CHIP, SPECS

NAMES = (
    "peak_tflops", "int8_factor", "sram_over_dram", "dram_gbps", "dispatch_us", "per_op_us",
    "spill_factor",
)  # fmt: skip
# physical ceilings: compute at most the rated fp16 peak (+5% for the rating's rounding), SRAM
# at most 8x DRAM bandwidth (the rows never bind it, so it would run off otherwise), DRAM
# bandwidth at most what the SoC's memory delivers (M4 Max: 546 GB/s)
_REF = SPECS[REFERENCE_CHIP]
LOWER = np.log([1.0, 1.0, 1.0, 10.0, 1.0, 1e-3, 1.0])
UPPER = np.log([1.05 * _REF.rated_fp16_tflops, 4.0, 8.0, _REF.memory_gbps, 3000.0, 20.0, 100.0])
STARTS = (
    (19.0, 1.8, 4.0, 300.0, 200.0, 0.5, 4.0),
    (12.0, 1.5, 10.0, 100.0, 100.0, 1.0, 1.0),
    (30.0, 2.0, 2.0, 500.0, 300.0, 0.2, 10.0),
)
SRAM_RANGE_MIB = (24.0, 32.0)  # the probes' estimate: "about 24-32 MB of weights fit"


@dataclass(frozen=True)
class RowError:
    group: str
    label: str
    measured_ms: float
    predicted_ms: float
    weight_bytes: int = 0

    @property
    def pct(self) -> float:
        """Signed error of the prediction, in % of the measurement."""
        return (self.predicted_ms / self.measured_ms - 1.0) * 100.0

    @property
    def log_ratio(self) -> float:
        return math.log(self.predicted_ms / self.measured_ms)


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
    params: PerfParams
    errors: tuple[RowError, ...]
    metrics: FitMetrics
    method: str  # "scipy" or "numpy"


def score(rows: Sequence[RefRow], params: PerfParams) -> tuple[RowError, ...]:
    """Predicted vs measured for every row, through :func:`roofline.predict`."""
    return tuple(
        RowError(r.group, r.label, r.measured_ms, predict(r.cost, params).ms, r.cost.weight_bytes)
        for r in rows
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


class _Features:
    """The rows' ops as flat arrays, so one prediction of all rows is a few NumPy calls."""

    def __init__(self, rows: Sequence[RefRow]) -> None:
        ops = [(i, op) for i, r in enumerate(rows) for op in r.cost.ops]
        self.row = np.array([i for i, _ in ops])
        self.flops = np.array([op.flops for _, op in ops], dtype=float)
        self.int8 = np.array([op.int8 for _, op in ops])
        self.weight = np.array([op.weight_bytes for _, op in ops], dtype=float)
        self.act = np.array([op.act_bytes for _, op in ops], dtype=float)
        self.io = np.array([op.io_bytes for _, op in ops], dtype=float)
        self.footprint = np.array([r.cost.weight_bytes for r in rows], dtype=float)
        self.measured = np.array([r.measured_ms for r in rows])
        self.n = len(rows)

    def predict_ms(self, u: np.ndarray, sram_bytes: float) -> np.ndarray:
        peak, int8, ratio, dram, dispatch, per_op, spill = np.exp(u)
        resident = (self.footprint <= sram_bytes)[self.row]
        streamed = self.weight * np.where(self.weight > sram_bytes, spill, 1.0)
        rate = peak * 1e3 * np.where(self.int8, int8, 1.0)
        t = np.maximum.reduce(
            [
                self.flops / rate,
                (self.io + np.where(resident, 0.0, streamed)) / dram,
                (self.act + np.where(resident, self.weight, 0.0)) / (dram * ratio),
            ]
        )
        per_row = np.bincount(self.row, weights=t + per_op * 1e3, minlength=self.n)
        return (per_row + dispatch * 1e3) / 1e6

    def residuals(self, sram_bytes: float) -> Callable[[np.ndarray], np.ndarray]:
        log_measured = np.log(self.measured)
        return lambda u: np.log(self.predict_ms(u, sram_bytes)) - log_measured


def _lm_numpy(fun: Callable[[np.ndarray], np.ndarray], u0: np.ndarray) -> np.ndarray:
    """Levenberg-Marquardt with forward-difference Jacobian, clipped to the bounds."""
    u = np.clip(u0, LOWER, UPPER)
    r = fun(u)
    cost, lam = float(r @ r), 1e-2
    for _ in range(300):
        jac = np.empty((r.size, u.size))
        for k in range(u.size):
            du = np.zeros_like(u)
            du[k] = 1e-6 if u[k] + 1e-6 <= UPPER[k] else -1e-6
            jac[:, k] = (fun(u + du) - r) / du[k]
        a, g = jac.T @ jac, jac.T @ r
        while lam < 1e12:
            step = np.linalg.solve(a + lam * (np.diag(np.diag(a)) + 1e-9 * np.eye(u.size)), -g)
            trial = np.clip(u + step, LOWER, UPPER)
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


def _solve(fun: Callable[[np.ndarray], np.ndarray], u0: np.ndarray, use_scipy: bool) -> np.ndarray:
    if use_scipy:
        from scipy.optimize import least_squares

        return least_squares(fun, np.clip(u0, LOWER, UPPER), bounds=(LOWER, UPPER)).x
    return _lm_numpy(fun, u0)


def _sram_candidates(
    feats: _Features, sram_range: tuple[float, float]
) -> list[tuple[float, float]]:
    """Gaps between measured footprints within ``sram_range`` (MiB): (lowest, highest)
    capacity giving the same cliff."""
    lo, hi = (v * MIB for v in sram_range)
    sizes = sorted({lo, *(f for f in feats.footprint if lo <= f < hi)})
    return [(a, b) for a, b in zip(sizes, [*sizes[1:], hi], strict=True)]


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
    sram_range: tuple[float, float] = SRAM_RANGE_MIB,
) -> FitResult:
    """Fit the reference chip's parameters to ``rows``; the SRAM capacity is searched within
    ``sram_range`` MiB (default: the probes' own estimate)."""
    use_scipy = scipy_available() if use_scipy is None else use_scipy
    feats = _Features(rows)
    best: tuple[float, np.ndarray, tuple[float, float]] | None = None
    for gap in _sram_candidates(feats, sram_range):
        fun = feats.residuals(gap[0])
        for start in STARTS:
            u = _solve(fun, np.log(start), use_scipy)
            r = fun(u)
            if best is None or float(r @ r) < best[0]:
                best = (float(r @ r), u, gap)
    if best is None:
        raise ValueError(f"empty SRAM range {sram_range}")
    _, u, (lo, hi) = best
    values = {k: float(v) for k, v in zip(NAMES, np.exp(u), strict=True)}
    # any capacity in [lo, hi) gives the same fit: report the middle of the gap
    sram_mib = round(float(lo + hi) / MIB) / 2
    params = PerfParams(
        chip=REFERENCE_CHIP,
        peak_tflops=round(values["peak_tflops"], 3),
        rated_fp16_tflops=SPECS[REFERENCE_CHIP].rated_fp16_tflops,
        int8_factor=round(values["int8_factor"], 3),
        sram_mib=sram_mib,
        sram_gbps=round(values["dram_gbps"] * values["sram_over_dram"], 1),
        dram_gbps=round(values["dram_gbps"], 1),
        dispatch_us=round(values["dispatch_us"], 2),
        per_op_us=round(values["per_op_us"], 4),
        spill_factor=round(values["spill_factor"], 3),
        calibrated=True,
    )
    errors = score(rows, params)
    m = metrics(errors)
    source = (
        f"fitted to {m.rows} measured rows (M4 Max; INT8 rows from an M4, same ANE) by "
        f"scripts/fit_perfmodel.py; rms log error {m.rms_log:.3f}"
    )
    params = PerfParams(**{**params.to_dict(), "chip": params.chip, "source": source})
    return FitResult(params, errors, m, "scipy" if use_scipy else "numpy")
