"""Compile, warm up and time one benchmark program, and model it, on the chosen backend.

On ``ane`` the reported time is measured (mean wall time per eval, like the original's
``mach_absolute_time`` loop; the driver's hardware time too when it reports one). On ``sim``
the reported time is the performance model's ANE time for the chip, and the simulator's own
host time is kept beside it, labelled as such. ``model_only`` skips compiling altogether.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anetrain import runtime
from anetrain.bench.result import r
from anetrain.hardware.chips import ChipProfile
from anetrain.mil.ir import Program
from anetrain.mil.model import MILModel
from anetrain.perfmodel import PerfModelError, PerfParams, Prediction, get_params, predict

QUICK = (1, 3)  # warmup, iters on the simulator (and with --quick)


@dataclass
class Timing:
    """One program's numbers. ``ms`` is what the tables print (see :attr:`Runner.kind`)."""

    ms: float | None
    modeled_ms: float | None = None
    host_ms: float | None = None  # sim: simulator wall time per eval on this machine
    hw_ms: float | None = None  # ane: hardware execution time, when reported
    error: str | None = None  # why compile or eval failed

    @property
    def status(self) -> str:
        return "OK" if self.error is None else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        """The JSON fields every benchmark row carries."""
        out: dict[str, Any] = {
            "ms_per_eval": r(self.ms, 4),
            "modeled_ms_per_eval": r(self.modeled_ms, 4),
            "host_ms_per_eval": r(self.host_ms, 4),
            "hw_ms_per_eval": r(self.hw_ms, 4),
            "status": self.status,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class Iterations:
    warmup: int
    iters: int


class Runner:
    """Times programs on one backend and chip; ``kind`` says what ``Timing.ms`` holds:
    "ane" (measured on the Neural Engine) or "model" (perf model; sim or ``model_only``)."""

    def __init__(
        self,
        backend: str = "auto",
        chip: str | ChipProfile | None = None,
        *,
        warmup: int | None = None,
        iters: int | None = None,
        quick: bool = False,
        model_only: bool = False,
        seed: int = 0,
    ) -> None:
        self.backend: runtime.Backend | None = None
        if model_only:
            self.chip: ChipProfile = runtime.get_chip(chip)
            self.backend_name = "none"
        else:
            self.backend = runtime.get_backend(backend, chip)
            self.chip = self.backend.chip
            self.backend_name = self.backend.name
        self.kind = "ane" if self.backend_name == "ane" else "model"
        self.warmup, self.iters, self.quick = warmup, iters, quick
        self.rng = np.random.default_rng(seed)
        self.failures: list[tuple[str, str]] = []  # (program name, error), for the footer
        try:
            self.params: PerfParams | None = get_params(self.chip)
        except PerfModelError:
            self.params = None
        if self.kind == "model" and self.params is None:
            raise PerfModelError(
                f"no performance-model parameters for {self.chip.display}; "
                "the simulator's tables need them (see docs/perfmodel.md)"
            )

    @property
    def runs(self) -> bool:
        """Whether programs are actually compiled and evaluated."""
        return self.backend is not None

    def iterations(self, defaults: tuple[int, int], sim: tuple[int, int] = QUICK) -> Iterations:
        """Explicit ``--warmup/--iters`` win; else the original's counts on the ANE, or the
        quick counts on the simulator (and with ``--quick``)."""
        base = sim if (self.quick or self.backend_name != "ane") else defaults
        warmup = base[0] if self.warmup is None else self.warmup
        iters = base[1] if self.iters is None else self.iters
        return Iterations(max(0, warmup), max(1, iters))

    @property
    def target(self) -> str:
        """The MIL dialect the chip accepts: ios18 (program 1.3), or ios16 on M1/M2."""
        return self.chip.dialect

    @property
    def extra(self) -> str | None:
        """The tables' trailing column: host time on sim, model time on the ANE."""
        if not self.runs:
            return None
        return "model" if self.kind == "ane" else "host"

    @property
    def rated_tflops(self) -> float:
        """The chip's rated fp16 peak, the denominator of %peak."""
        if self.params is not None:
            return self.params.rated_fp16_tflops
        return float(self.chip.rated_tops or "nan")

    def _failed(self, timing: Timing, name: str, stage: str, err: Exception) -> Timing:
        timing.error = f"{stage}: {type(err).__name__}: {err}"
        self.failures.append((name, timing.error))
        return timing

    def failure_notes(self) -> list[str]:
        """One line per distinct failure, naming the programs it hit."""
        by_error: dict[str, list[str]] = {}
        for name, error in self.failures:
            by_error.setdefault(error, []).append(name)
        return [f"FAIL {', '.join(names)}: {error}" for error, names in by_error.items()]

    def notes(self, it: Iterations | None) -> list[str]:
        """Footer lines saying what the times are."""
        model = "perf model, uncalibrated guess"
        if self.params is not None and self.params.calibrated:
            model = "perf model, calibrated"
        runs = "" if it is None else f"mean of {it.iters} evals after {it.warmup} warmup"
        if self.kind == "ane":
            return [
                f"times: measured ANE wall time per eval on {self.chip.display}, {runs}; "
                f"model ms = {model} prediction",
                *self.failure_notes(),
            ]
        lines = [f"times: modeled ANE time per eval on {self.chip.display} ({model})"]
        if self.runs:
            lines.append(f"host ms: simulator wall time on this machine ({runs}), not ANE time")
        else:
            lines.append("nothing was compiled or run (--model-only)")
        return lines + self.failure_notes()

    def predict(self, program: Program) -> Prediction | None:
        return None if self.params is None else predict(program, self.params)

    def compile(self, model: MILModel, name: str, qos: int | None = None) -> runtime.Kernel:
        assert self.backend is not None, "model_only runner cannot compile"
        kw = {} if qos is None else {"qos": qos}
        return self.backend.compile(model.program, model.weights, name=name, **kw)

    def fill_inputs(self, kernel: runtime.Kernel) -> None:
        for surface in kernel.inputs:
            n = int(np.prod(surface.shape))
            surface.write(self.rng.standard_normal(n).astype(np.float32) * 0.5)

    def time_kernel(self, kernel: runtime.Kernel, it: Iterations) -> tuple[float, float | None]:
        """Mean wall and (if reported) hardware ms per eval after ``it.warmup`` evals."""
        for _ in range(it.warmup):
            kernel.eval()
        wall, hw = [], []
        for _ in range(it.iters):
            kernel.eval()
            wall.append(kernel.stats.wall_ns or 0)
            if kernel.stats.hw_ns is not None:
                hw.append(kernel.stats.hw_ns)
        return float(np.mean(wall)) / 1e6, (float(np.mean(hw)) / 1e6 if hw else None)

    def measure(self, model: MILModel, name: str, it: Iterations) -> Timing:
        """Model ``model``, then (unless model-only) compile, fill, time and unload it."""
        pred = self.predict(model.program)
        modeled = pred.ms if pred is not None else None
        timing = Timing(ms=modeled if self.kind == "model" else None, modeled_ms=modeled)
        if not self.runs:
            return timing
        try:
            kernel = self.compile(model, name)
        except Exception as err:  # a benchmark row reports its failure and the sweep goes on
            return self._failed(timing, name, "compile", err)
        try:
            self.fill_inputs(kernel)
            wall_ms, hw_ms = self.time_kernel(kernel, it)
        except Exception as err:
            return self._failed(timing, name, "eval", err)
        finally:
            kernel.unload()
        if self.kind == "ane":
            timing.ms, timing.hw_ms = wall_ms, hw_ms
        else:
            timing.host_ms = wall_ms
        return timing
