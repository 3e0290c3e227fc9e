"""``anetrain doctor --selftest`` and ``--backend auto``: the staged probe and its cached verdict.

The probe runs here through the real bridge on the stand-in modules of tests/ane_standins.py,
with the simulator executing the MIL text the stand-in ANE receives (binding conformance, not
hardware: on a Mac the same stages run against the framework).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ane_standins import STATUS_0X1D, AneWorld, NSErrorStandIn
from anetrain import runtime
from anetrain.runtime import registry
from anetrain.runtime.ane import backend as ane_backend
from anetrain.runtime.ane import selftest
from anetrain.runtime.sim import SimBackend

STAGES = [
    "platform",
    "framework",
    "classes",
    "compile",
    "eval",
    "compare",
    "reload",
    "request reuse",
]


def sim_executor(desc: Any, inputs: list[bytes]) -> list[bytes]:
    """Run the descriptor's MIL text and weights in the simulator on the input bytes."""
    k = SimBackend("m4").compile(desc.mil.decode(), desc.weights)
    for surface, data in zip(k.inputs, inputs, strict=False):  # fp16 I/O, as the probe uses
        x = np.frombuffer(data[: surface.nbytes], np.float16).astype(np.float32)
        surface.write(x.reshape(surface.channels, surface.spatial))
    k.eval()
    return [s.read().astype(np.float16).tobytes() for s in k.outputs]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AneWorld:
    monkeypatch.setattr(ane_backend, "LOAD_RETRY_DELAY_S", 0.0)
    w = AneWorld(tmp_path)
    w.executor = sim_executor
    return w


def test_selftest_passes_every_stage_through_the_real_bridge(world: AneWorld) -> None:
    report = selftest.run_selftest(bridge=world.bridge(), chip="m4", perf_stats=True)
    assert report.ok, report.error
    assert [s.name for s in report.stages] == [*STAGES, "perf stats"]
    assert all(s.ok for s in report.stages)
    assert world.rejected == [] and world.compiles == 1
    data = json.loads(report.to_json())
    assert data["ok"] is True and data["environment"]["anetrain"]


def test_selftest_stops_at_the_first_failing_stage_with_the_raw_error(world: AneWorld) -> None:
    world.fail_at["evaluateWithQoS:options:request:error:"] = NSErrorStandIn(8, STATUS_0X1D)
    report = selftest.run_selftest(bridge=world.bridge(), chip="m4")
    assert not report.ok and report.failed_stage == "eval"
    assert [s.name for s in report.stages] == STAGES[:5]
    assert "status=0x1d" in report.error and "EvalError" in report.error
    assert report.summary().startswith("stage 'eval' failed: EvalError")


def test_selftest_compare_catches_wrong_numbers(world: AneWorld) -> None:
    world.executor = None  # the stand-in then echoes its input: not what the conv computes
    report = selftest.run_selftest(bridge=world.bridge(), chip="m4", quick=True)
    assert report.failed_stage == "compare" and "differ" in report.error


def test_doctor_selftest_off_mac_is_one_line_without_traceback(tmp_path: Path) -> None:
    if sys.platform == "darwin":
        pytest.skip("checks the non-macOS behaviour")
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "anetrain.cli", "doctor", "--selftest", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "platform" in lines[0] and "macOS" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert json.loads(out.read_text())["failed_stage"] == "platform"


# ---- --backend auto -------------------------------------------------------------------------


def test_auto_off_mac_is_sim_without_probing(monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform == "darwin":
        pytest.skip("checks the non-macOS behaviour")

    def no_probe() -> None:
        raise AssertionError("probed off macOS")

    monkeypatch.setattr(selftest, "ane_verdict", no_probe)
    assert registry.resolve_backend_name("auto") == "sim"
    assert runtime.get_backend("auto").name == "sim"


def test_auto_on_a_mac_falls_back_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(registry.sys, "platform", "darwin")
    monkeypatch.setattr(registry, "_auto_notice_shown", False)
    verdict = (False, "stage 'eval' failed: EvalError: status 0x1d")
    monkeypatch.setattr(selftest, "ane_verdict", lambda: verdict)
    assert registry.resolve_backend_name("auto") == "sim"
    assert registry.resolve_backend_name("auto") == "sim"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stage 'eval'" in err[0] and "anetrain doctor --selftest" in err[0]
    monkeypatch.setattr(selftest, "ane_verdict", lambda: (True, ""))
    assert registry.resolve_backend_name("auto") == "ane"
    assert registry.resolve_backend_name("ane") == "ane"  # never softened


def test_verdict_is_cached_per_machine_macos_and_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANETRAIN_CACHE_DIR", str(tmp_path))
    env = {"anetrain": "1.0", "brand_string": "Apple M4 Max", "macos": "15.3", "machine": "arm64"}
    monkeypatch.setattr(selftest, "environment", lambda: dict(env))
    calls = []

    def probe() -> selftest.SelftestReport:
        calls.append(1)
        return selftest.SelftestReport(ok=False, failed_stage="compile", error="CompileError: x")

    assert selftest.ane_verdict(probe) == (False, "stage 'compile' failed: CompileError: x")
    assert selftest.ane_verdict(probe)[0] is False and len(calls) == 1  # cached
    for key, value in (("macos", "15.4"), ("anetrain", "1.1"), ("brand_string", "Apple M5")):
        env[key] = value
        selftest.ane_verdict(probe)
    assert len(calls) == 4
    assert len(json.loads((tmp_path / "ane-probe.json").read_text())) == 4
    (tmp_path / "ane-probe.json").write_text("not json")
    selftest.ane_verdict(probe)  # a broken cache is probed again, not an error
    assert len(calls) == 5


def test_a_crashing_probe_is_a_failed_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANETRAIN_CACHE_DIR", str(tmp_path))

    def boom() -> selftest.SelftestReport:
        raise OSError("disk")

    ok, reason = selftest.ane_verdict(boom)
    assert not ok and "disk" in reason


def test_the_auto_probe_runs_in_a_child_process() -> None:
    report = selftest.probe_in_subprocess()
    if sys.platform != "darwin":
        assert not report.ok and report.failed_stage == "platform"
        assert "macOS" in report.error


def test_a_probe_process_that_dies_is_a_failed_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    crash = [sys.executable, "-c", "import os, sys; sys.stderr.write('boom\\n'); os.abort()"]
    monkeypatch.setattr(selftest, "probe_command", lambda: crash)
    report = selftest.probe_in_subprocess()
    assert report.failed_stage == "probe process" and "signal" in report.error
    assert "boom" in report.error
    hang = [sys.executable, "-c", "import time; time.sleep(30)"]
    monkeypatch.setattr(selftest, "probe_command", lambda: hang)
    report = selftest.probe_in_subprocess(timeout=0.5)
    assert report.failed_stage == "probe process" and "did not finish" in report.error


def test_doctor_selftest_prints_each_stage_and_writes_the_report(
    world: AneWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from anetrain.cli import main

    bridge = world.bridge()
    real = selftest.run_selftest
    monkeypatch.setattr(selftest, "run_selftest", lambda **kw: real(bridge=bridge, **kw))
    out = tmp_path / "r.json"
    assert main(["doctor", "--selftest", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["ok"] * len(STAGES)
    assert json.loads(out.read_text())["ok"] is True
    world.fail_at["evaluateWithQoS:options:request:error:"] = NSErrorStandIn(8, STATUS_0X1D)
    assert main(["doctor", "--selftest"]) == 1
    text = capsys.readouterr().out
    assert "FAIL eval" in text and "status=0x1d" in text and "--json FILE" in text
    assert main(["doctor", "--selftest", "--quick", "--json"]) == 1  # stdout: the JSON only
    assert json.loads(capsys.readouterr().out)["failed_stage"] == "eval"
