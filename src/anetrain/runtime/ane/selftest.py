"""A staged probe of the ane backend on this machine (``anetrain doctor --selftest``).

Stages run in order and stop at the first failure, keeping its raw error: platform, framework
(PyObjC + dlopen), classes, compile (+ load) of a small conv whose surfaces are above the chip's
floor, eval, comparison with the simulator within fp16 tolerance, unload and reload, request
reuse, and perf stats when asked for. The report is plain JSON a user can attach to a bug
report. ``quick=True`` stops after the comparison: that is what ``--backend auto`` runs, in a
child process (a framework crash or hang must not take the caller with it), with the verdict
cached per machine, macOS version and anetrain version.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CONV_CHANNELS = 256
PROBE_TIMEOUT_S = 120.0  # compile + load + eval of one small conv takes well under a second
ATOL, RTOL = 2e-2, 1e-2  # fp16 results of a 256-term dot product, as the contract suite allows


@dataclass
class Stage:
    name: str
    ok: bool
    seconds: float
    detail: str = ""
    error: str | None = None


@dataclass
class SelftestReport:
    ok: bool
    failed_stage: str | None
    error: str | None
    stages: list[Stage] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: passed, or which stage failed and why."""
        if self.ok:
            return f"ane selftest passed ({len(self.stages)} stages)"
        first = (self.error or "").strip().splitlines()
        return f"stage '{self.failed_stage}' failed: {first[0] if first else 'no error text'}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SelftestReport:
        return cls(
            ok=bool(data["ok"]),
            failed_stage=data.get("failed_stage"),
            error=data.get("error"),
            stages=[Stage(**stage) for stage in data.get("stages", [])],
            environment=dict(data.get("environment", {})),
        )


def environment() -> dict[str, Any]:
    """What identifies this machine and software for the report and the probe cache."""
    from anetrain import __version__
    from anetrain.runtime.ane.device import brand_string

    return {
        "anetrain": __version__,
        "sys_platform": sys.platform,
        "machine": platform.machine(),
        "macos": platform.mac_ver()[0] or None,
        "brand_string": brand_string(),
        "python": platform.python_version(),
    }


class _Probe:
    """State shared by the stages."""

    def __init__(self, bridge: Any, chip: Any, perf_stats: bool) -> None:
        self.bridge = bridge
        self.chip = chip
        self.perf_stats = perf_stats
        self.modules: Any = None
        self.backend: Any = None
        self.kernel: Any = None
        self.sim: Any = None
        self.program: Any = None
        self.weights: dict[str, bytes] = {}
        self.rng = np.random.default_rng(0)
        self.first: np.ndarray | None = None

    # ---- stages ---------------------------------------------------------------------------

    def platform(self) -> str:
        from anetrain.runtime.ane.objc_bridge import platform_problem
        from anetrain.runtime.errors import BackendUnavailable

        if self.bridge is not None:
            return "bridge supplied by the caller"
        problem = platform_problem()
        if problem:
            raise BackendUnavailable(problem)
        return f"{platform.system()} {platform.mac_ver()[0]} {platform.machine()}"

    def framework(self) -> str:
        from anetrain.runtime.ane.objc_bridge import FRAMEWORK, open_modules

        if self.bridge is not None:
            return "skipped"
        self.modules = open_modules()
        return f"PyObjC imported, {FRAMEWORK} loaded"

    def classes(self) -> str:
        from anetrain.runtime.ane.objc_bridge import build_bridge

        if self.bridge is None:
            self.bridge = build_bridge(*self.modules)
        return ", ".join(sorted(self.bridge.classes))

    def compile(self) -> str:
        from anetrain.runtime import testing
        from anetrain.runtime.ane.backend import AneBackend

        self.backend = AneBackend(self.chip, bridge=self.bridge, perf_stats=self.perf_stats)
        floor = self.backend.chip.min_surface_bytes
        seq = max(32, math.ceil(floor / (2 * CONV_CHANNELS)))
        w = (self.rng.standard_normal((CONV_CHANNELS, CONV_CHANNELS)) / 16).astype(np.float16)
        target = self.backend.chip.dialect
        self.program, self.weights = testing.conv_program(w, seq, target)
        self.kernel = self.backend.compile(self.program, self.weights, name="selftest_conv")
        return f"conv {CONV_CHANNELS}x{CONV_CHANNELS} over S={seq} ({self.kernel.input.nbytes} B)"

    def eval(self) -> str:
        x = self._x()
        self.kernel.input.write(x)
        self.kernel.eval()
        self.first = self.kernel.output.read()
        return f"wall {self.kernel.stats.wall_ns} ns"

    def compare(self) -> str:
        from anetrain.runtime.sim import SimBackend

        self.sim = SimBackend(self.backend.chip).compile(self.program, self.weights)
        return self._compare(self.kernel.output.read(), self.kernel.input.read())

    def reload(self) -> str:
        self.kernel.unload()
        self.kernel.load()
        self.kernel.eval()
        again = self.kernel.output.read()
        if not np.array_equal(again, self.first):
            raise RuntimeError("the output after unload + load differs from the first eval")
        return "same output after unload + load"

    def request_reuse(self) -> str:
        details = []
        for _ in range(2):
            surface = self.kernel.new_surface()
            x = self._x()
            surface.write(x)
            self.kernel.request(surface).eval()
            details.append(self._compare(self.kernel.output.read(), surface.read()))
        return "; ".join(details)

    def perf_stats_stage(self) -> str:
        hw = self.kernel.stats.hw_ns
        if hw is None:
            raise RuntimeError("perf stats were enabled but hwExecutionTime was not reported")
        return f"hwExecutionTime {hw} ns"

    # ---- helpers --------------------------------------------------------------------------

    def _x(self) -> np.ndarray:
        spec = self.kernel.input_specs[0]
        return self.rng.standard_normal((spec.channels, spec.spatial)).astype(np.float32)

    def _compare(self, got: np.ndarray, x: np.ndarray) -> str:
        self.sim.input.write(x)
        self.sim.eval()
        want = self.sim.output.read()
        err = float(np.max(np.abs(got - want)))
        if not np.allclose(got, want, atol=ATOL, rtol=RTOL):
            raise RuntimeError(
                f"ANE and simulator outputs differ: max |diff| {err:.4g} "
                f"(tolerance atol {ATOL}, rtol {RTOL})"
            )
        return f"max |ane - sim| {err:.3g}"

    def close(self) -> None:
        for kernel in (self.kernel, self.sim):
            if kernel is not None:
                with contextlib.suppress(Exception):
                    kernel.unload()


def run_selftest(
    *, bridge: Any = None, chip: Any = None, perf_stats: bool = False, quick: bool = False
) -> SelftestReport:
    """Run the stages, stopping at the first failure (never raises for a failing stage)."""
    probe = _Probe(bridge, chip, perf_stats)
    stages: list[tuple[str, Callable[[], str]]] = [
        ("platform", probe.platform),
        ("framework", probe.framework),
        ("classes", probe.classes),
        ("compile", probe.compile),
        ("eval", probe.eval),
        ("compare", probe.compare),
    ]
    if not quick:
        stages += [("reload", probe.reload), ("request reuse", probe.request_reuse)]
        if perf_stats:
            stages.append(("perf stats", probe.perf_stats_stage))
    report = SelftestReport(ok=True, failed_stage=None, error=None, environment=environment())
    try:
        for name, fn in stages:
            start = time.perf_counter()
            try:
                detail = fn()
            except Exception as err:
                raw = f"{type(err).__name__}: {err}"
                report.stages.append(Stage(name, False, time.perf_counter() - start, error=raw))
                report.ok, report.failed_stage = False, name
                report.error = raw + "\n" + "".join(traceback.format_exception(err)[-3:])
                break
            report.stages.append(Stage(name, True, time.perf_counter() - start, detail))
    finally:
        probe.close()
    return report


# ---- the verdict --backend auto uses ------------------------------------------------------


def probe_command() -> list[str]:
    return [sys.executable, "-m", "anetrain.cli", "doctor", "--selftest", "--quick", "--json", "-"]


def probe_in_subprocess(timeout: float = PROBE_TIMEOUT_S) -> SelftestReport:
    """The quick probe in a child process; a crash, hang or garbled output is a failed stage."""

    def failed(stage: str, error: str) -> SelftestReport:
        return SelftestReport(ok=False, failed_stage=stage, error=error)

    try:
        done = subprocess.run(
            probe_command(), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return failed("probe process", f"the probe did not finish within {timeout:g} s")
    except OSError as err:
        return failed("probe process", f"cannot start the probe: {err}")
    try:
        return SelftestReport.from_dict(json.loads(done.stdout))
    except (ValueError, KeyError, TypeError):
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return failed("probe process", f"the probe process ended with {how}: {tail}")


def cache_path() -> Path:
    """``$ANETRAIN_CACHE_DIR`` or ``$XDG_CACHE_HOME/anetrain`` or ``~/.cache/anetrain``."""
    root = os.environ.get("ANETRAIN_CACHE_DIR")
    if root:
        return Path(root) / "ane-probe.json"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "anetrain" / "ane-probe.json"


def probe_key(env: dict[str, Any]) -> str:
    """The verdict holds for one machine, macOS version and anetrain version."""
    machine = env.get("brand_string") or env.get("machine")
    return f"{machine} | macOS {env.get('macos')} | anetrain {env.get('anetrain')}"


def ane_verdict(
    probe: Callable[[], SelftestReport] | None = None,
) -> tuple[bool, str]:
    """``(True, "")`` if the quick probe passes here, else ``(False, one-line reason)``; cached.

    Never raises: an unreadable cache is probed again, an unwritable one is not kept.
    """
    env = environment()
    key = probe_key(env)
    path = cache_path()
    try:
        cache = json.loads(path.read_text("utf-8"))
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("ok"), bool):
        return entry["ok"], str(entry.get("reason", ""))
    try:
        report = (probe or probe_in_subprocess)()
        ok, reason = report.ok, "" if report.ok else report.summary()
    except Exception as err:  # the probe must never strand the caller
        ok, reason = False, f"the probe itself failed: {type(err).__name__}: {err}"
    cache[key] = {"ok": ok, "reason": reason, "checked": time.strftime("%Y-%m-%dT%H:%M:%S")}
    _write_atomic(path, json.dumps(cache, indent=2))
    return ok, reason


def _write_atomic(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ane-probe-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError:
        pass
