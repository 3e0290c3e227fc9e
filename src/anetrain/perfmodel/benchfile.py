"""Bench JSON files (``anetrain bench ... --json``, or the community benchmark schema) as
fittable rows: each timed benchmark row is rebuilt as the probe program that produced it.

Known sections: ``inmem_peak`` (conv chains), ``inmem_bench``, ``sram_bench`` and
``sram_probe`` (single convs), ``dispatch`` (one small fp16 conv), ``int8_w8a8`` (FP16 and
W8A8 chains on [1, ch, sp, sp]). Failed or untimed rows are skipped; so are unknown sections.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anetrain.hardware.chips import get_chip, normalize_name
from anetrain.hardware.errors import UnknownChipError
from anetrain.perfmodel.params import PerfModelError
from anetrain.perfmodel.reference import RefRow, chain, int8_chain, single

SINGLE_SECTIONS = ("inmem_bench", "sram_bench", "sram_probe")


def _ms(row: dict[str, Any], key: str = "ms_per_eval") -> float | None:
    value = row.get(key)
    if row.get("status", "OK") != "OK" or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def _spatial(row: dict[str, Any]) -> int:
    # the community sram_probe rows carry no spatial size: the original ran 8192 channels at 32
    return int(row.get("spatial") or (32 if int(row["channels"]) >= 8192 else 64))


def chip_of(doc: dict[str, Any]) -> str:
    """The chip a bench document was measured (or modeled) on."""
    block = doc.get("anetrain") or {}
    name = block.get("chip") or str((doc.get("system") or {}).get("chip", ""))
    name = normalize_name(name.replace("(modeled)", ""))
    get_chip(name)  # raises UnknownChipError naming the known chips
    return name


def rows_from_bench(doc: dict[str, Any], source: str, chip: str | None = None) -> list[RefRow]:
    """Every timed row of one bench document, on ``chip`` (default: the document's)."""
    if not isinstance(doc.get("benchmarks"), dict):
        raise PerfModelError(f"{source}: not a bench JSON file (no 'benchmarks' section)")
    try:
        chip = normalize_name(chip) if chip else chip_of(doc)
        get_chip(chip)  # --chip, too, must name a known chip
    except UnknownChipError as err:
        hint = "" if chip else " (pass --chip to name the chip it was measured on)"
        raise UnknownChipError(f"{source}: {err}{hint}") from None
    out: list[RefRow] = []
    bench = doc["benchmarks"]
    try:
        for r in bench.get("inmem_peak", []):
            d, c, s = int(r["depth"]), int(r["channels"]), int(r["spatial"])
            if (ms := _ms(r)) is not None:
                out.append(
                    RefRow(
                        f"{source}:inmem_peak", f"{d}x conv {c}ch sp{s}", chain(c, s, d), ms, chip
                    )
                )
        for key in SINGLE_SECTIONS:
            for r in bench.get(key, []):
                c, s = int(r["channels"]), _spatial(r)
                if (ms := _ms(r)) is not None:
                    out.append(RefRow(f"{source}:{key}", f"{c}ch x {s}sp", single(c, s), ms, chip))
        for r in bench.get("dispatch", []):
            c, s = int(r["channels"]), int(r["spatial"])
            if (ms := _ms(r)) is not None:
                out.append(
                    RefRow(f"{source}:dispatch", f"{c}x{s} fp16 conv", chain(c, s, 1), ms, chip)
                )
        for r in bench.get("int8_w8a8", []):
            d, c, s = int(r["depth"]), int(r["channels"]), int(r["spatial"])
            label = f"{d}x conv {c}ch {s}x{s}"
            if (ms := _ms(r, "fp16_ms")) is not None:
                out.append(
                    RefRow(f"{source}:int8_w8a8", f"FP16 {label}", chain(c, s, d, s), ms, chip)
                )
            if (ms := _ms(r, "int8_ms")) is not None:
                out.append(
                    RefRow(f"{source}:int8_w8a8", f"W8A8 {label}", int8_chain(c, s, d), ms, chip)
                )
    except (KeyError, TypeError, ValueError) as err:
        raise PerfModelError(f"{source}: malformed benchmark row ({err!r})") from None
    return out


def load_bench_files(paths: list[Path], chip: str | None = None) -> list[RefRow]:
    """Rows of every file; an unreadable or empty file is a typed error naming it."""
    rows: list[RefRow] = []
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise PerfModelError(f"cannot read {path}: {err.strerror or err}") from None
        except json.JSONDecodeError as err:
            raise PerfModelError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(doc, dict):
            raise PerfModelError(f"{path}: not a bench JSON file")
        found = rows_from_bench(doc, Path(path).name, chip)
        if not found:
            raise PerfModelError(f"{path}: no timed benchmark rows to fit")
        rows += found
    return rows
