"""The benchmark JSON document: the community benchmark schema v1, plus an ``anetrain`` block.

Compatible with dev-erik/ANE's ``community_benchmarks/*.json`` (``schema_version`` 1,
``system`` / ``benchmarks`` / ``summary``; its aggregator reads ``system.chip``,
``summary.peak_tflops``, ``summary.sram_spill_start_channels`` and ``benchmarks.sram_probe``).
Rows keep the community keys (``ms_per_eval``, ``tflops``, ``weight_mb``...; note that
``gflops`` there means GFLOP per eval) and add ours. When the times are modeled, not measured,
``system.chip`` says "(modeled)" and ``anetrain.times`` is "modeled". See docs/bench.md.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from anetrain import __version__
from anetrain.bench.result import SuiteResult
from anetrain.bench.runner import Runner

SCHEMA_VERSION = 1
ROW_REQUIRED = {
    "sram_probe": ("channels", "weight_mb", "ms_per_eval", "tflops", "gflops_per_mb"),
    "inmem_peak": ("depth", "channels", "spatial", "weight_mb", "gflops", "ms_per_eval", "tflops"),
}

# JSON Schema (draft 2020-12) of the document; docs/bench.md describes every field.
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "anetrain bench results (community benchmark schema v1 + anetrain block)",
    "type": "object",
    "required": ["schema_version", "timestamp", "system", "benchmarks", "summary", "anetrain"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "timestamp": {"type": "string"},
        "system": {
            "type": "object",
            "required": ["chip", "machine", "macos_version", "memory_gb", "neural_engine_cores"],
            "properties": {
                "chip": {"type": "string"},
                "machine": {"type": "string"},
                "macos_version": {"type": ["string", "null"]},
                "memory_gb": {"type": ["number", "null"]},
                "neural_engine_cores": {"type": "string"},
            },
        },
        "benchmarks": {
            "type": "object",
            "properties": {
                key: {
                    "type": "array",
                    "items": {"type": "object", "required": list(cols)},
                }
                for key, cols in ROW_REQUIRED.items()
            },
        },
        "summary": {"type": "object"},
        "anetrain": {
            "type": "object",
            "required": ["version", "backend", "times", "chip", "perfmodel", "runs"],
            "properties": {
                "times": {"enum": ["measured", "modeled"]},
                "backend": {"enum": ["ane", "sim", "none"]},
            },
        },
    },
}


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    except (ValueError, OSError, AttributeError):
        return None


def _machine() -> str:
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.model"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except OSError:
            pass
    return f"{platform.system()} {platform.machine()}"


def system_info(runner: Runner) -> dict[str, Any]:
    modeled = runner.kind != "ane"
    return {
        "chip": runner.chip.display + (" (modeled)" if modeled else ""),
        "machine": _machine(),
        "macos_version": platform.mac_ver()[0] or None,
        "memory_gb": _memory_gb(),
        "neural_engine_cores": str(runner.chip.ane_cores),
        "host": platform.platform(),
    }


def document(runner: Runner, results: list[SuiteResult], command: str) -> dict[str, Any]:
    """The whole JSON document for one ``anetrain bench`` run."""
    summary: dict[str, Any] = {}
    for res in results:
        summary.update(res.summary)
    params = runner.params
    return {
        "schema_version": SCHEMA_VERSION,
        "timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "system": system_info(runner),
        "benchmarks": {res.key: res.rows for res in results},
        "summary": summary,
        "anetrain": {
            "version": __version__,
            "command": command,
            "backend": runner.backend_name,
            "times": "measured" if runner.kind == "ane" else "modeled",
            "chip": runner.chip.name,
            "runs": runner.runs,
            "perfmodel": None if params is None else {"chip": params.chip, **params.to_dict()},
        },
    }


def validate(doc: dict[str, Any]) -> list[str]:
    """Problems with ``doc`` against the schema's required structure (empty list: valid)."""
    problems = []
    for key in SCHEMA["required"]:
        if key not in doc:
            problems.append(f"missing top-level '{key}'")
    if doc.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version must be {SCHEMA_VERSION}")
    for section in ("system", "benchmarks", "summary", "anetrain"):
        if section in doc and not isinstance(doc[section], dict):
            problems.append(f"'{section}' must be an object")
    system = doc.get("system", {})
    if isinstance(system, dict):
        for key in SCHEMA["properties"]["system"]["required"]:
            if key not in system:
                problems.append(f"missing system.{key}")
    benchmarks = doc.get("benchmarks", {})
    if isinstance(benchmarks, dict):
        for key, cols in ROW_REQUIRED.items():
            for i, row in enumerate(benchmarks.get(key, [])):
                missing = [c for c in cols if c not in row]
                if missing:
                    problems.append(f"benchmarks.{key}[{i}] lacks {', '.join(missing)}")
    block = doc.get("anetrain", {})
    if isinstance(block, dict):
        for key in SCHEMA["properties"]["anetrain"]["required"]:
            if key not in block:
                problems.append(f"missing anetrain.{key}")
    return problems


def write_json(path: str | Path, doc: dict[str, Any]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return out
