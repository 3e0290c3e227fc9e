"""The measured M4 Max reference figures (``reference_m4max.json``) as fittable rows.

Each row pairs a weight-free probe program (``probes.*(data=False)``) with its
measured ms per eval. The INT8 rows were measured on an Apple M4, not the M4 Max: both carry
the same 16-core H16 Neural Engine (rated 38 TOPS each), so their times transfer with
:data:`M4_TO_M4MAX` = 1.0. They are the only compute-bound rows (spatial 64x64), so they pin
the fp16 compute roof as well as the INT8 factor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from anetrain.kernels import probes
from anetrain.perfmodel.costs import ProgramCost, program_cost

REFERENCE_FILE = "reference_m4max.json"
M4_TO_M4MAX = 1.0  # time scale from an M4 measurement to the M4 Max (same ANE)
INT8_SPATIAL = 64  # the int8 bench runs on [1, ch, 64, 64]


@dataclass(frozen=True)
class RefRow:
    """One measured eval: what ran, where it comes from, and how long it took."""

    group: str  # the section of the reference file
    label: str
    cost: ProgramCost
    measured_ms: float  # already scaled to the M4 Max


def load_reference(path: str | Path | None = None) -> dict[str, Any]:
    """The reference document (default: the packaged copy)."""
    if path is None:
        pkg = resources.files("anetrain.perfmodel").joinpath(REFERENCE_FILE)
        return json.loads(pkg.read_text("utf-8"))
    return json.loads(Path(path).read_text(encoding="utf-8"))


@cache
def _single(ch: int, sp: int) -> ProgramCost:
    return program_cost(probes.single_conv(ch, sp, data=False).program)


@cache
def _chain(ch: int, sp: int, depth: int, height: int = 1) -> ProgramCost:
    return program_cost(probes.conv_chain(ch, sp, depth, data=False, height=height).program)


@cache
def _int8(ch: int, sp: int, depth: int) -> ProgramCost:
    return program_cost(probes.int8_chain(ch, sp, depth, data=False).program)


def _records(section: dict[str, Any]) -> list[dict[str, Any]]:
    cols = section["columns"]
    return [dict(zip(cols, row, strict=True)) for row in section["rows"]]


def reference_rows(doc: dict[str, Any] | None = None) -> list[RefRow]:
    """Every timed row of the reference document, in file order."""
    doc = load_reference() if doc is None else doc
    rows: list[RefRow] = []
    for r in _records(doc["peak_conv_chain"]):
        d, c, s = int(r["depth"]), int(r["ch"]), int(r["sp"])
        label = f"{d}x conv {c}ch sp{s}"
        rows.append(RefRow("peak_conv_chain", label, _chain(c, s, d), r["ms_per_eval"]))
    for group in ("single_conv_inmem", "sram_coarse_probe"):
        for r in _records(doc[group]):
            c, s = int(r["ch"]), int(r["sp"])
            label = f"{c}ch x {s}sp"
            rows.append(RefRow(group, label, _single(c, s), r["ms_per_eval"]))
    sp = INT8_SPATIAL
    for r in _records(doc["int8_w8a8_m4"]):
        d, c = int(r["depth"]), int(r["ch"])
        base = f"{d}x conv {c}ch {sp}x{sp}"
        fp16 = _chain(c, sp, d, height=sp)
        rows.append(RefRow("int8_w8a8_m4", f"FP16 {base}", fp16, r["fp16_ms"] * M4_TO_M4MAX))
        rows.append(
            RefRow("int8_w8a8_m4", f"W8A8 {base}", _int8(c, sp, d), r["int8_ms"] * M4_TO_M4MAX)
        )
    return rows


def training_reference(doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """The measured training figures (Stories110M), as in the reference file."""
    doc = load_reference() if doc is None else doc
    return dict(doc["training_stories110m"])
