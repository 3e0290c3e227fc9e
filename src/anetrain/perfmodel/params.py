"""Per-chip performance-model parameters, read from ``params.json`` (package data).

The file is written by ``scripts/fit_perfmodel.py``: the M4 Max entry is fitted to measured
figures; the other chips are derived from public specs and marked ``"calibrated": false``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from anetrain.errors import AnetrainError
from anetrain.runtime.chips import ChipProfile, normalize_name

PARAMS_FILE = "params.json"
MIB = 1 << 20


class PerfModelError(AnetrainError):
    """No parameters for a chip, or a malformed parameters file."""


@dataclass(frozen=True)
class PerfParams:
    """The physical parameters of one chip's Neural Engine, as the roofline model uses them."""

    chip: str
    peak_tflops: float  # effective fp16 compute roof (what the fit says the ANE sustains)
    rated_fp16_tflops: float  # public fp16 peak; the denominator of every %peak column
    int8_factor: float  # int8-weight convs/matmuls run this much faster than fp16
    sram_mib: float  # on-chip capacity for resident weights
    sram_gbps: float  # on-chip bandwidth (resident weights, intermediate activations)
    dram_gbps: float  # bandwidth for streamed weights and the input/output surfaces
    dispatch_us: float  # fixed cost of one eval
    per_op_us: float  # fixed cost of each runtime op
    # weight traffic multiplier for one op whose own weights exceed the SRAM: they cannot stay
    # on chip while the op sweeps its spatial tiles, so they are streamed again and again
    spill_factor: float = 1.0
    calibrated: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        positive = ("peak_tflops", "rated_fp16_tflops", "sram_mib", "sram_gbps", "dram_gbps")
        for key in positive:
            if not getattr(self, key) > 0:
                raise PerfModelError(f"perf params for {self.chip!r}: {key} must be > 0")
        for key in ("dispatch_us", "per_op_us"):
            if getattr(self, key) < 0:
                raise PerfModelError(f"perf params for {self.chip!r}: {key} must be >= 0")
        if self.int8_factor < 1:
            raise PerfModelError(f"perf params for {self.chip!r}: int8_factor must be >= 1")
        if self.spill_factor < 1:
            raise PerfModelError(f"perf params for {self.chip!r}: spill_factor must be >= 1")
        if self.dram_gbps > self.sram_gbps:
            raise PerfModelError(
                f"perf params for {self.chip!r}: dram_gbps ({self.dram_gbps}) exceeds sram_gbps "
                f"({self.sram_gbps}); spilled weights would get faster"
            )

    @property
    def sram_bytes(self) -> int:
        return int(self.sram_mib * MIB)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["chip"]
        return data


_KEYS = {f.name for f in fields(PerfParams)} - {"chip"}


def params_from_dict(chip: str, data: dict[str, Any]) -> PerfParams:
    unknown = set(data) - _KEYS
    if unknown:
        raise PerfModelError(f"perf params for {chip!r}: unknown keys {sorted(unknown)}")
    try:
        return PerfParams(chip=chip, **data)
    except TypeError as err:
        raise PerfModelError(f"perf params for {chip!r}: {err}") from None


def read_params_file(path: str | Path | None = None) -> dict[str, Any]:
    """The whole parameters document (default: the packaged ``params.json``)."""
    if path is None:
        text = resources.files("anetrain.perfmodel").joinpath(PARAMS_FILE).read_text("utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise PerfModelError(f"{path or PARAMS_FILE} is not valid JSON: {err}") from None
    if not isinstance(doc.get("chips"), dict):
        raise PerfModelError(f"{path or PARAMS_FILE}: missing 'chips' section")
    return doc


@lru_cache(maxsize=1)
def _packaged() -> dict[str, PerfParams]:
    doc = read_params_file()
    return {name: params_from_dict(name, values) for name, values in doc["chips"].items()}


def get_params(chip: str | ChipProfile | PerfParams) -> PerfParams:
    """Parameters for a chip name or profile (``PerfParams`` pass through)."""
    if isinstance(chip, PerfParams):
        return chip
    name = normalize_name(chip.name if isinstance(chip, ChipProfile) else chip)
    table = _packaged()
    if name not in table:
        known = ", ".join(table)
        raise PerfModelError(f"no performance-model parameters for chip {name!r}; known: {known}")
    return table[name]


def known_chips() -> list[str]:
    return list(_packaged())
