"""Per-chip performance-model parameters, read from ``params.json`` (package data).

The file is written by ``scripts/fit_perfmodel.py``: the M4 Max and M4 entries are fitted to
measured figures; the other chips are derived from public specs and marked
``"calibrated": false``. The SRAM capacity is not a model parameter: it is read from the one
chip profile (:mod:`anetrain.hardware`), so the simulator and the model cannot disagree on it.
A profile written by ``anetrain perfmodel fit`` (see :func:`read_profile`) replaces a chip's
entry for one run (``--chip-profile``).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from anetrain.errors import AnetrainError
from anetrain.hardware.chips import ChipProfile, get_chip, normalize_name

PARAMS_FILE = "params.json"
MIB = 1 << 20


class PerfModelError(AnetrainError):
    """No parameters for a chip, or a malformed parameters or profile file."""


@dataclass(frozen=True)
class PerfParams:
    """The physical parameters of one chip's Neural Engine, as the model uses them."""

    chip: str
    peak_tflops: float  # fp16 compute roof (the rated figure: the INT8 bench's FP16 rows reach it)
    rated_fp16_tflops: float  # public fp16 peak; the denominator of every %peak column
    int8_factor: float  # int8-weight convs/matmuls run this much faster (rated INT8 / fp16)
    sram_gbps: float  # on-chip feed of resident weights (ops up to core_buffer_mib) and activations
    big_op_gbps: float  # on-chip feed of an op whose weights exceed core_buffer_mib
    dram_gbps: float  # what the engine draws from DRAM: streamed weights and the I/O surfaces
    memory_gbps: float  # the SoC's memory bandwidth: a ceiling dram_gbps may never pass
    dispatch_us: float  # fixed cost of one eval (per machine: 0.07 ms on an M5, 0.3 on an M4 Max)
    per_op_us: float  # fixed cost of each runtime op
    floor_us: float = 0.0  # no eval returns sooner on this machine (M4 Max: ~0.33 ms; M4: none)
    core_buffer_mib: float = 1.0  # largest op whose weights are fed at sram_gbps
    compile_ms: float = 40.0  # compile of one kernel
    load_ms: float = 1.7  # load of one compiled kernel
    sram_mib: float = 32.0  # set from the chip profile's sram_bytes (not stored in params.json)
    calibrated: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        positive = (
            "peak_tflops", "rated_fp16_tflops", "sram_gbps", "big_op_gbps", "dram_gbps",
            "memory_gbps", "sram_mib", "core_buffer_mib",
        )  # fmt: skip
        for key in positive:
            if not getattr(self, key) > 0:
                raise PerfModelError(f"perf params for {self.chip!r}: {key} must be > 0")
        for key in ("dispatch_us", "per_op_us", "floor_us", "compile_ms", "load_ms"):
            if getattr(self, key) < 0:
                raise PerfModelError(f"perf params for {self.chip!r}: {key} must be >= 0")
        if self.int8_factor < 1:
            raise PerfModelError(f"perf params for {self.chip!r}: int8_factor must be >= 1")
        if self.dram_gbps > self.memory_gbps * 1.0001:
            raise PerfModelError(
                f"perf params for {self.chip!r}: dram_gbps ({self.dram_gbps}) exceeds the SoC's "
                f"memory bandwidth ({self.memory_gbps} GB/s)"
            )
        if self.dram_gbps > self.sram_gbps:
            raise PerfModelError(
                f"perf params for {self.chip!r}: dram_gbps ({self.dram_gbps}) exceeds sram_gbps "
                f"({self.sram_gbps}); weights kept on chip would be slower than streamed ones"
            )
        if not self.big_op_gbps <= self.sram_gbps:
            raise PerfModelError(
                f"perf params for {self.chip!r}: big_op_gbps ({self.big_op_gbps}) exceeds "
                f"sram_gbps ({self.sram_gbps}); a bigger op would get faster"
            )

    @property
    def sram_bytes(self) -> int:
        return int(self.sram_mib * MIB)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["chip"], data["sram_mib"]
        return data


_KEYS = {f.name for f in fields(PerfParams)} - {"chip"}


def params_from_dict(
    chip: str, data: dict[str, Any], profile: ChipProfile | None = None
) -> PerfParams:
    """Parameters from a JSON entry; the SRAM capacity comes from the chip profile unless the
    entry names one (a profile fitted elsewhere)."""
    unknown = set(data) - _KEYS
    if unknown:
        raise PerfModelError(f"perf params for {chip!r}: unknown keys {sorted(unknown)}")
    values = dict(data)
    if "sram_mib" not in values:
        with contextlib.suppress(AnetrainError):  # a chip without a profile keeps the default
            values["sram_mib"] = (profile or get_chip(chip)).sram_bytes / MIB
    try:
        return PerfParams(chip=chip, **values)
    except TypeError as err:
        raise PerfModelError(f"perf params for {chip!r}: {err}") from None


def _read_json(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        text = resources.files("anetrain.perfmodel").joinpath(PARAMS_FILE).read_text("utf-8")
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise PerfModelError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise PerfModelError(f"{path or PARAMS_FILE} is not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise PerfModelError(f"{path or PARAMS_FILE}: expected a JSON object")
    return doc


def read_params_file(path: str | Path | None = None) -> dict[str, Any]:
    """The whole parameters document (default: the packaged ``params.json``)."""
    doc = _read_json(path)
    if not isinstance(doc.get("chips"), dict):
        raise PerfModelError(f"{path or PARAMS_FILE}: missing 'chips' section")
    return doc


def read_profile(path: str | Path) -> PerfParams:
    """A chip profile written by ``anetrain perfmodel fit`` (``{"chip": ..., "params": ...}``)."""
    doc = _read_json(path)
    if doc.get("kind") != PROFILE_KIND or not isinstance(doc.get("params"), dict):
        raise PerfModelError(
            f"{path}: not a chip profile (write one with 'anetrain perfmodel fit FILE --out "
            f"{Path(path).name}')"
        )
    chip = normalize_name(str(doc.get("chip", "")))
    return params_from_dict(chip, doc["params"])


PROFILE_KIND = "anetrain-perf-profile"
_PROFILES: dict[str, PerfParams] = {}  # --chip-profile overrides, by chip name


def use_profile(params: PerfParams) -> None:
    """Make ``get_params(params.chip)`` return ``params`` for the rest of the process: how
    ``--chip-profile`` makes the simulator and the bench model a measured chip."""
    _PROFILES[normalize_name(params.chip)] = params


def clear_profiles() -> None:
    _PROFILES.clear()


def profile_document(params: PerfParams, fit: dict[str, Any], sources: list[str]) -> dict[str, Any]:
    """What ``anetrain perfmodel fit --out`` writes and :func:`read_profile` reads."""
    values = {k: round(v, 6) if isinstance(v, float) else v for k, v in params.to_dict().items()}
    return {
        "kind": PROFILE_KIND,
        "schema": 1,
        "chip": params.chip,
        "params": values,
        "fit": fit,
        "sources": sources,
    }


@lru_cache(maxsize=1)
def _packaged() -> dict[str, PerfParams]:
    doc = read_params_file()
    return {name: params_from_dict(name, values) for name, values in doc["chips"].items()}


def get_params(chip: str | ChipProfile | PerfParams) -> PerfParams:
    """Parameters for a chip name or profile (``PerfParams`` pass through). A profile's SRAM
    capacity wins over the packaged one, so a changed profile changes the model."""
    if isinstance(chip, PerfParams):
        return chip
    name = normalize_name(chip.name if isinstance(chip, ChipProfile) else chip)
    table = {**_packaged(), **_PROFILES}
    if name not in table:
        known = ", ".join(table)
        raise PerfModelError(f"no performance-model parameters for chip {name!r}; known: {known}")
    if isinstance(chip, ChipProfile):
        return replace(table[name], sram_mib=chip.sram_bytes / MIB)
    return table[name]


def known_chips() -> list[str]:
    return list(_packaged())
