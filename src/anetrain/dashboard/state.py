"""What the dashboard knows about a run folder: records, smoothing and derived numbers.

:class:`RunState` follows ``config.json``, ``metrics.jsonl`` and ``summary.json`` (see
docs/formats.md, "The run folder"). Call :meth:`RunState.update` to pick up what the trainer
wrote since the last call; everything else is derived from the records read so far.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anetrain.dashboard.tail import JsonlTail
from anetrain.errors import AnetrainError
from anetrain.runfolder import CONFIG, METRICS, PHASES, RUN_FILES, SUMMARY

EMA_BETA = 0.9  # loss smoothing, bias-corrected (like TensorBoard's 0.9)


class DashboardError(AnetrainError):
    """The folder cannot be followed (missing, or not a run folder)."""


@dataclass(frozen=True)
class StepPoint:
    """One ``{"type": "step"}`` record; ``None`` where the trainer wrote null (non-finite)."""

    step: int
    loss: float | None
    lr: float | None = None
    grad_norm: float | None = None
    loss_scale: float | None = None
    skipped: bool = False
    ms: float | None = None
    tokens_per_s: float | None = None
    phases: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ValPoint:
    step: int
    val_loss: float | None


@dataclass(frozen=True)
class PhaseShare:
    """Mean time of one pipeline phase over the recent steps, and its share of the step."""

    name: str
    ms: float
    pct: float


def number(value: Any) -> float | None:
    """A finite float, or None (null, NaN, Infinity, strings and booleans)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def step_point(record: dict[str, Any]) -> StepPoint | None:
    """Parse a step record; None when it has no integer ``step``."""
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        return None
    phases = {}
    for key, value in record.items():
        if key.endswith("_ms") and (ms := number(value)) is not None:
            phases[key[:-3]] = ms
    return StepPoint(
        step=step,
        loss=number(record.get("loss")),
        lr=number(record.get("lr")),
        grad_norm=number(record.get("grad_norm")),
        loss_scale=number(record.get("loss_scale")),
        skipped=record.get("skipped") is True,
        ms=number(record.get("ms")),
        tokens_per_s=number(record.get("tokens_per_s")),
        phases=phases,
    )


def val_point(record: dict[str, Any]) -> ValPoint | None:
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        return None
    return ValPoint(step, number(record.get("val_loss")))


def check_run_dir(run_dir: Path) -> None:
    """Raise :class:`DashboardError` unless ``run_dir`` is a folder holding a run file."""
    if not run_dir.exists():
        raise DashboardError(
            f"{run_dir}: no such run folder; start a run with `anetrain train --out {run_dir}`"
        )
    if not run_dir.is_dir():
        raise DashboardError(f"{run_dir}: not a folder; pass the run folder given to --out")
    if not any((run_dir / name).is_file() for name in RUN_FILES):
        raise DashboardError(
            f"{run_dir}: not a run folder (no config.json, metrics.jsonl or summary.json); "
            "pass the folder given to `anetrain train --out`"
        )


class RunState:
    """The dashboard's view of one run folder, updated incrementally."""

    def __init__(self, run_dir: Path, *, recent: int = 20) -> None:
        self.run_dir = Path(run_dir)
        self.recent = recent
        self.config: dict[str, Any] | None = None
        self.summary: dict[str, Any] | None = None
        self.steps: list[StepPoint] = []
        self.vals: list[ValPoint] = []
        self.bad_records = 0
        self.bad_json: set[str] = set()  # run files present but not a JSON object
        self.metrics_mtime: float | None = None
        self._tail = JsonlTail(self.run_dir / METRICS)
        self._config_mtime: int | None = None
        self._summary_mtime: int | None = None
        self._reset_aggregates()

    @classmethod
    def open(cls, run_dir: Path, *, recent: int = 20) -> RunState:
        """Check the folder, then read everything written so far."""
        check_run_dir(Path(run_dir))
        state = cls(run_dir, recent=recent)
        state.update()
        return state

    # ---- reading ----------------------------------------------------------------------------

    def update(self) -> bool:
        """Read what changed on disk; True if anything did."""
        changed = self._load_config()
        records, reset = self._tail.read()
        if reset:
            self._clear()
            changed = True
        for record in records:
            self._add(record)
        changed = changed or bool(records)
        changed = self._load_summary() or changed
        try:
            self.metrics_mtime = os.stat(self._tail.path).st_mtime
        except FileNotFoundError:
            self.metrics_mtime = None
        return changed

    def _load_config(self) -> bool:
        mtime = _mtime_ns(self.run_dir / CONFIG)
        if mtime == self._config_mtime:
            return False
        restarted = self._config_mtime is not None and mtime is not None
        self._config_mtime = mtime
        self.config = self._read_json(CONFIG, mtime)
        if restarted:  # config.json is rewritten at every (re)start: read the metrics afresh
            self._tail.restart()
            self._clear()
        return True

    def _load_summary(self) -> bool:
        mtime = _mtime_ns(self.run_dir / SUMMARY)
        newer = [_mtime_ns(self.run_dir / CONFIG), _mtime_ns(self._tail.path)]
        if mtime is not None and any(t is not None and t > mtime for t in newer):
            mtime = None  # left over from an earlier run: this one has (re)started since
        if mtime == self._summary_mtime:
            return False
        self._summary_mtime = mtime
        self.summary = self._read_json(SUMMARY, mtime)
        return True

    def _read_json(self, name: str, mtime: int | None) -> dict[str, Any] | None:
        """The JSON object in run file ``name`` (None when absent; noted in :attr:`bad_json`
        when present but unreadable: the trainer writes these files atomically, so a bad one
        is damage, not a write in progress)."""
        self.bad_json.discard(name)
        if mtime is None:
            return None
        value = _read_json(self.run_dir / name)
        if value is None:
            self.bad_json.add(name)
        return value

    def problems(self) -> list[str]:
        """What is wrong with the run files read so far, one phrase per file (empty: none)."""
        found = [f"{self.run_dir / name}: not a JSON object" for name in sorted(self.bad_json)]
        if self.malformed and not self.steps and not self.vals:  # a few bad lines are shown
            found.append(f"{self._tail.path}: no metrics records, {self.malformed} bad line(s)")
        return found

    def _clear(self) -> None:
        self.steps.clear()
        self.vals.clear()
        self.bad_records = 0
        self._reset_aggregates()

    def _reset_aggregates(self) -> None:
        self._ema = 0.0
        self._ema_n = 0
        self.best: StepPoint | None = None
        self.skipped = 0
        self.train_s = 0.0  # host time of the steps (no compile, validation or checkpoints)
        self.tokens_seen = 0.0  # training tokens processed (each step's tokens/s times time)
        self.compile_ms: dict[int, float] = {}  # step -> the recompile after it (static)
        self.restart_steps: set[int] = set()  # steps after which the run re-executed itself

    def _add(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == "step":
            point = step_point(record)
            if point is None:
                self.bad_records += 1
            elif self.steps and point.step <= self.steps[-1].step:
                # a resumed run repeats steps: the later record wins
                self.steps = [p for p in self.steps if p.step < point.step] + [point]
                self._rebuild()
            else:
                self.steps.append(point)
                self._aggregate(point)
        elif kind == "val":
            val = val_point(record)
            if val is None:
                self.bad_records += 1
            else:
                self.vals = [v for v in self.vals if v.step < val.step] + [val]
        elif kind == "batch":
            ms, step = number(record.get("compile_ms")), record.get("step")
            if ms is None or not isinstance(step, int):
                self.bad_records += 1
            else:
                self.compile_ms[step] = ms
        elif kind == "restart":
            if isinstance(record.get("step"), int):
                self.restart_steps.add(record["step"])
        elif kind is None:
            self.bad_records += 1
        # other record types: written by a newer trainer, ignored

    def _aggregate(self, p: StepPoint) -> None:
        if p.loss is not None:
            self._ema = EMA_BETA * self._ema + (1 - EMA_BETA) * p.loss
            self._ema_n += 1
            if self.best is None or p.loss < (self.best.loss or math.inf):
                self.best = p
        self.skipped += p.skipped
        self.train_s += (p.ms or 0.0) / 1e3
        self.tokens_seen += (p.tokens_per_s or 0.0) * (p.ms or 0.0) / 1e3

    def _rebuild(self) -> None:
        compile_ms, restarts = self.compile_ms, self.restart_steps
        self._reset_aggregates()
        self.compile_ms, self.restart_steps = compile_ms, restarts  # keyed by step already
        for p in self.steps:
            self._aggregate(p)

    @property
    def compile_s(self) -> float | None:
        """Recompile time so far (pipelines that recompile per batch; None for others)."""
        return sum(self.compile_ms.values()) / 1e3 if self.compile_ms else None

    @property
    def compile_share(self) -> float | None:
        """Compile time as a fraction of compile + train time."""
        c = self.compile_s
        return None if c is None or c + self.train_s <= 0 else c / (c + self.train_s)

    # ---- derived ----------------------------------------------------------------------------

    @property
    def malformed(self) -> int:
        """Lines that were not JSON objects, plus records without a usable type or step."""
        return self._tail.malformed + self.bad_records

    @property
    def has_files(self) -> bool:
        return any((self.run_dir / name).is_file() for name in RUN_FILES)

    @property
    def last(self) -> StepPoint | None:
        return self.steps[-1] if self.steps else None

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def total_steps(self) -> int | None:
        steps = (self.config or {}).get("train", {}).get("steps")
        if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0:
            return steps
        summary_steps = (self.summary or {}).get("steps")
        return summary_steps if isinstance(summary_steps, int) else None

    @property
    def loss_ema(self) -> float | None:
        """Bias-corrected exponential moving average of the training loss."""
        if not self._ema_n:
            return None
        return self._ema / (1 - EMA_BETA**self._ema_n)

    @property
    def last_val(self) -> ValPoint | None:
        return self.vals[-1] if self.vals else None

    @property
    def best_val(self) -> ValPoint | None:
        finite = [v for v in self.vals if v.val_loss is not None]
        return min(finite, key=lambda v: v.val_loss or 0.0) if finite else None

    def _recent(self) -> list[StepPoint]:
        return [p for p in self.steps[-self.recent :] if p.ms is not None and p.ms > 0]

    @property
    def ms_per_step(self) -> float | None:
        """Mean host time of the recent steps."""
        recent = self._recent()
        return sum(p.ms or 0.0 for p in recent) / len(recent) if recent else None

    @property
    def tokens_per_s(self) -> float | None:
        """Tokens over time across the recent steps (a time-weighted mean)."""
        recent = [p for p in self._recent() if p.tokens_per_s is not None]
        time_ms = sum(p.ms or 0.0 for p in recent)
        if not time_ms:
            return None
        return sum((p.tokens_per_s or 0.0) * (p.ms or 0.0) for p in recent) / time_ms

    @property
    def eta_s(self) -> float | None:
        """Seconds to ``total_steps`` at the recent ms/step."""
        total, ms, last = self.total_steps, self.ms_per_step, self.last
        if total is None or ms is None or last is None:
            return None
        return max(total - last.step, 0) * ms / 1e3

    def phase_breakdown(self) -> list[PhaseShare]:
        """Mean time per phase over the recent steps, with ``other`` for the unattributed rest."""
        recent = self._recent()
        if not recent:
            return []
        names = list(PHASES)
        for p in recent:
            names += [name for name in p.phases if name not in names]
        total = sum(p.ms or 0.0 for p in recent) / len(recent)
        shares = []
        for name in names:
            ms = sum(p.phases.get(name, 0.0) for p in recent) / len(recent)
            shares.append(PhaseShare(name, ms, 100 * ms / total))
        other = total - sum(s.ms for s in shares)
        if other > 0:
            shares.append(PhaseShare("other", other, 100 * other / total))
        return shares


def _mtime_ns(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
