"""Chip profiles now live in :mod:`anetrain.hardware` (a leaf package of hardware facts);
this module re-exports them for the runtime's existing importers."""

from __future__ import annotations

from anetrain.hardware.chips import (
    DEFAULT_CHIP,
    ChipProfile,
    chip_names,
    get_chip,
    macos_versions,
    normalize_macos,
    normalize_name,
    profile_from_dict,
    provenance,
)

__all__ = [
    "DEFAULT_CHIP",
    "ChipProfile",
    "chip_names",
    "get_chip",
    "macos_versions",
    "normalize_macos",
    "normalize_name",
    "profile_from_dict",
    "provenance",
]
