"""The ``ane`` backend: MIL programs on the Apple Neural Engine via the private framework.

Importing this package works everywhere and never imports PyObjC: the bridge to
``AppleNeuralEngine.framework`` is opened on first use (``AneBackend.available()`` or the first
compile). Off macOS ``AneBackend.available()`` is ``(False, reason)``. See docs/runtime.md,
"The ane backend".
"""

from anetrain.runtime.ane.backend import AneBackend, AneKernel
from anetrain.runtime.ane.device import (
    DetectedChip,
    chip_from_brand,
    chip_from_subtype,
    detect_chip,
)
from anetrain.runtime.ane.iosurface import AneSurface

__all__ = [
    "AneBackend",
    "AneKernel",
    "AneSurface",
    "DetectedChip",
    "chip_from_brand",
    "chip_from_subtype",
    "detect_chip",
]
