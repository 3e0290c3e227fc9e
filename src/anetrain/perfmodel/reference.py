"""The measured reference figures as fittable rows, each on the chip it was measured on.

``reference_m4max.json`` holds the M4 Max tables (and the INT8 bench, measured on an M4);
``reference_community.json`` holds public community runs of the same programs (an M4 mini's
peak and in-memory tables, and cross-chip peaks). Each row pairs a weight-free probe program
(``probes.*(data=False)``) with its measured ms per eval.
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
COMMUNITY_FILE = "reference_community.json"
INT8_SPATIAL = 64  # the int8 bench runs on [1, ch, 64, 64]


@dataclass(frozen=True)
class RefRow:
    """One measured eval: what ran, on which chip, where it comes from, how long it took."""

    group: str  # the table it belongs to (the unit of cross-validation)
    label: str
    cost: ProgramCost
    measured_ms: float
    chip: str = "m4max"


@dataclass(frozen=True)
class PeakRow:
    """A cross-chip peak: TFLOPS of one config, or of the best row of the sp64 peak table."""

    chip: str
    macos: str | None
    tflops: float
    config: tuple[int, int, int] | None  # (depth, ch, sp); None: best of the peak table

    @property
    def label(self) -> str:
        if self.config is None:
            return "best row of the sp64 peak table"
        d, c, s = self.config
        return f"{d}x conv {c}ch sp{s}"


def _read(name: str, path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return json.loads(resources.files("anetrain.perfmodel").joinpath(name).read_text("utf-8"))
    return json.loads(Path(path).read_text(encoding="utf-8"))


def load_reference(path: str | Path | None = None) -> dict[str, Any]:
    """The M4 Max reference document (default: the packaged copy)."""
    return _read(REFERENCE_FILE, path)


def load_community(path: str | Path | None = None) -> dict[str, Any]:
    return _read(COMMUNITY_FILE, path)


@cache
def single(ch: int, sp: int) -> ProgramCost:
    return program_cost(probes.single_conv(ch, sp, data=False).program)


@cache
def chain(ch: int, sp: int, depth: int, height: int = 1) -> ProgramCost:
    return program_cost(probes.conv_chain(ch, sp, depth, data=False, height=height).program)


@cache
def int8_chain(ch: int, sp: int, depth: int) -> ProgramCost:
    return program_cost(probes.int8_chain(ch, sp, depth, data=False).program)


def _records(section: dict[str, Any]) -> list[dict[str, Any]]:
    cols = section["columns"]
    return [dict(zip(cols, row, strict=True)) for row in section["rows"]]


def _chain_rows(group: str, section: dict[str, Any], chip: str) -> list[RefRow]:
    out = []
    for r in _records(section):
        d, c, s = int(r["depth"]), int(r["ch"]), int(r["sp"])
        out.append(RefRow(group, f"{d}x conv {c}ch sp{s}", chain(c, s, d), r["ms_per_eval"], chip))
    return out


def _single_rows(group: str, section: dict[str, Any], chip: str) -> list[RefRow]:
    out = []
    for r in _records(section):
        c, s = int(r["ch"]), int(r["sp"])
        out.append(RefRow(group, f"{c}ch x {s}sp", single(c, s), r["ms_per_eval"], chip))
    return out


def reference_rows(doc: dict[str, Any] | None = None, community: bool = True) -> list[RefRow]:
    """Every timed row: the M4 Max tables, the INT8 bench (M4) and the M4 community tables."""
    doc = load_reference() if doc is None else doc
    rows = _chain_rows("peak_conv_chain", doc["peak_conv_chain"], "m4max")
    for group in ("single_conv_inmem", "sram_coarse_probe"):
        rows += _single_rows(group, doc[group], "m4max")
    sp = INT8_SPATIAL
    for r in _records(doc["int8_w8a8_m4"]):
        d, c = int(r["depth"]), int(r["ch"])
        base = f"{d}x conv {c}ch {sp}x{sp}"
        fp16 = chain(c, sp, d, height=sp)
        rows.append(RefRow("int8_w8a8_m4", f"FP16 {base}", fp16, r["fp16_ms"], "m4"))
        rows.append(
            RefRow("int8_w8a8_m4", f"W8A8 {base}", int8_chain(c, sp, d), r["int8_ms"], "m4")
        )
    if community:
        m4 = load_community()["m4_issue3"]
        rows += _chain_rows("m4_peak_conv_chain", m4["peak_conv_chain"], m4["chip"])
        rows += _single_rows("m4_single_conv_inmem", m4["single_conv_inmem"], m4["chip"])
    return rows


def cross_chip_rows() -> list[PeakRow]:
    out = []
    for r in load_community()["cross_chip_peaks"]["rows"]:
        config = None if r.get("best_of_peak_table") else (r["depth"], r["ch"], r["sp"])
        out.append(PeakRow(r["chip"], r.get("macos"), float(r["tflops"]), config))
    return out


def training_reference(doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """The measured training figures (Stories110M), as in the reference file."""
    doc = load_reference() if doc is None else doc
    return dict(doc["training_stories110m"])
