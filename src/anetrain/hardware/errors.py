"""Errors of the hardware-facts package: an unknown chip or macOS version, or malformed data.

They derive from :class:`anetrain.errors.AnetrainError` (the project's one root error, itself
importing nothing), so the CLI prints them as one line.
"""

from __future__ import annotations

from anetrain.errors import AnetrainError


class HardwareDataError(AnetrainError):
    """Base class of errors about chip profiles and the constraints registry."""


class UnknownChipError(HardwareDataError):
    """A chip name or macOS version that has no profile in ``hardware/chips.json``."""


class ChipProfileError(HardwareDataError):
    """``chips.json``, ``constraints.json`` (or a custom profile) is malformed."""
