"""Chip profiles: what each Apple M-series ANE accepts, per macOS version, from ``chips.json``.

A profile is data, not code: ``defaults`` <- ``families[family]`` <- ``parts[name]`` <-
``macos.versions[os].overrides[family or "*"]``. What a program must satisfy (and the evidence
for each rule) is in ``constraints.json``; the numbers those rules compare against live here,
once. ``dataclasses.replace(profile, ...)`` makes a variant for experiments.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from anetrain.hardware.errors import ChipProfileError, UnknownChipError

DEFAULT_CHIP = "m4"


@dataclass(frozen=True)
class ChipProfile:
    """Capabilities and limits of one chip's Neural Engine on one macOS major version."""

    name: str
    display: str
    family: str
    arch: str
    dies: int
    ane_cores: int
    rated_tops: float | None
    program_versions: tuple[str, ...]
    opsets: tuple[str, ...]
    unsupported_ops: frozenset[str]
    io_dtypes: tuple[str, ...]
    io_rank: int
    weights_one_blob_per_file: bool
    max_dim: int
    conv_max_input_channels: int
    max_weight_bytes: int
    sram_bytes: int
    compile_budget: int
    flush_subnormals: bool
    multi_input_allowed: bool
    sdpa_ignores_mask: bool
    min_surface_bytes: int  # the ane backend allocates every surface at least this large
    macos: str = ""  # macOS major version ("26", "15", "14"); "" for a hand-made profile
    notes: tuple[str, ...] = ()

    def supports_op(self, op_type: str) -> bool:
        return op_type not in self.unsupported_ops

    @property
    def dialect(self) -> str:
        """The newest MIL dialect this chip accepts on its macOS: ios18 (program 1.3) or
        ios16 (program 1.0)."""
        return "ios18" if "1.3" in self.program_versions and "ios18" in self.opsets else "ios16"

    @property
    def label(self) -> str:
        """``Apple M1 Max (m1max, macOS 15)``: what error messages call the chip."""
        os = f", macOS {self.macos}" if self.macos else ""
        return f"{self.display} ({self.name}{os})"


_FIELDS = {f.name for f in fields(ChipProfile)}
_TUPLES = ("program_versions", "opsets", "io_dtypes", "notes")
_OPTIONAL = {"name", "notes", "macos"}


@lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    text = resources.files("anetrain.hardware").joinpath("chips.json").read_text("utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ChipProfileError(f"chips.json is not valid JSON: {err}") from None
    for key in ("defaults", "families", "parts", "macos"):
        if not isinstance(data.get(key), dict):
            raise ChipProfileError(f"chips.json: missing or invalid '{key}' section")
    return data


def normalize_name(name: str) -> str:
    """``"Apple M4 Max"``, ``"m4-max"`` and ``"M4MAX"`` all become ``"m4max"``."""
    key = re.sub(r"[\s_\-]+", "", name.lower())
    return key.removeprefix("apple")


def chip_names() -> list[str]:
    """All known part names, e.g. ``["m1", "m1pro", ..., "m5ultra"]``."""
    return list(_load()["parts"])


def macos_versions() -> list[str]:
    """The macOS major versions profiles exist for, oldest first."""
    return sorted(_load()["macos"]["versions"], key=int)


def default_macos() -> str:
    return str(_load()["macos"]["default"])


def normalize_macos(version: str | int | None) -> str:
    """``"26.2"``, ``"macOS 15.7.4"`` and ``15`` become the major version; None: the newest."""
    if version is None or version == "":
        return default_macos()
    text = str(version).strip().lower().removeprefix("macos").strip()
    major = text.split(".")[0]
    if major not in _load()["macos"]["versions"]:
        raise UnknownChipError(
            f"no chip profiles for macOS {version!r}; known: {', '.join(macos_versions())} "
            "(pass the major version, e.g. --os 15)"
        )
    return major


def profile_from_dict(name: str, values: dict[str, Any]) -> ChipProfile:
    """Build and check a profile from merged JSON values (used for custom profiles too)."""
    unknown = set(values) - _FIELDS
    if unknown:
        raise ChipProfileError(f"chip {name!r}: unknown profile keys {sorted(unknown)}")
    missing = _FIELDS - set(values) - _OPTIONAL
    if missing:
        raise ChipProfileError(f"chip {name!r}: missing profile keys {sorted(missing)}")
    kwargs = {k: values[k] for k in _FIELDS if k in values}
    kwargs["name"] = name
    for key in _TUPLES:
        kwargs[key] = tuple(kwargs.get(key, ()))
    kwargs["unsupported_ops"] = frozenset(kwargs["unsupported_ops"])
    positive = (
        "dies", "ane_cores", "io_rank", "max_dim", "conv_max_input_channels", "min_surface_bytes",
    )  # fmt: skip
    for key in positive:
        if not isinstance(kwargs[key], int) or kwargs[key] < 1:
            raise ChipProfileError(f"chip {name!r}: '{key}' must be a positive integer")
    if not isinstance(kwargs["compile_budget"], int) or kwargs["compile_budget"] < 0:
        raise ChipProfileError(f"chip {name!r}: 'compile_budget' must be an integer >= 0")
    bad_io = set(kwargs["io_dtypes"]) - {"fp16", "fp32"}
    if bad_io or not kwargs["io_dtypes"]:
        raise ChipProfileError(f"chip {name!r}: io_dtypes must be a subset of fp16/fp32")
    if not kwargs["program_versions"] or not kwargs["opsets"]:
        raise ChipProfileError(f"chip {name!r}: needs at least one program version and opset")
    return ChipProfile(**kwargs)


@cache
def _build(name: str, macos: str) -> ChipProfile:
    data = _load()
    part = dict(data["parts"][name])
    family_name = part.pop("family", None)
    if family_name not in data["families"]:
        raise ChipProfileError(f"chip {name!r}: unknown family {family_name!r}")
    overrides = data["macos"]["versions"][macos].get("overrides", {})
    merged = {
        **data["defaults"],
        **data["families"][family_name],
        **part,
        **overrides.get("*", {}),
        **overrides.get(family_name, {}),
    }
    merged["family"] = family_name
    merged["macos"] = macos
    return profile_from_dict(name, merged)


def get_chip(chip: str | ChipProfile | None = None, macos: str | int | None = None) -> ChipProfile:
    """The profile for ``chip`` (a name or a profile; None means :data:`DEFAULT_CHIP`) on
    macOS ``macos`` (a version string; None means the newest). A profile passes through."""
    if isinstance(chip, ChipProfile):
        return chip
    key = normalize_name(chip or DEFAULT_CHIP)
    if key not in _load()["parts"]:
        known = ", ".join(chip_names())
        raise UnknownChipError(f"unknown chip {chip!r}; known chips: {known}")
    return _build(key, normalize_macos(macos))


def provenance() -> dict[str, str]:
    """Where each profile value comes from (reported, measured or assumed)."""
    return dict(_load().get("provenance", {}))
