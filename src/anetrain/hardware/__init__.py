"""Hardware facts as data: chip profiles per macOS version and the constraints registry.

A leaf package: it imports nothing from anetrain but the root error class, so the runtime,
the simulator, the performance model and the CLI can all read the same facts without cycles.

    from anetrain import hardware
    chip = hardware.get_chip("m1max", macos="15")   # ChipProfile; chip.dialect == "ios18"
    hardware.constraints_for(chip)                  # the registry entries that bind it
"""

from __future__ import annotations

from anetrain.hardware.chips import (
    DEFAULT_CHIP,
    ChipProfile,
    chip_names,
    default_macos,
    get_chip,
    macos_versions,
    normalize_macos,
    normalize_name,
    profile_from_dict,
    provenance,
)
from anetrain.hardware.constraints import Constraint, Evidence, constraints, constraints_for
from anetrain.hardware.errors import ChipProfileError, HardwareDataError, UnknownChipError

__all__ = [
    "DEFAULT_CHIP",
    "ChipProfile",
    "ChipProfileError",
    "Constraint",
    "Evidence",
    "HardwareDataError",
    "UnknownChipError",
    "chip_names",
    "constraints",
    "constraints_for",
    "default_macos",
    "get_chip",
    "macos_versions",
    "normalize_macos",
    "normalize_name",
    "profile_from_dict",
    "provenance",
]
