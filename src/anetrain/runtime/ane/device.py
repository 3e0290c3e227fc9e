"""Which chip is this? ``sysctl machdep.cpu.brand_string`` and ``_ANEDeviceInfo.aneSubType``.

The brand string ("Apple M4 Max") names the exact part; the ANE subtype ("h16") only the family
(h13 = M1 ... h17 = M5), so the brand string wins and the subtype is the fallback. The mapping
functions are pure so they are tested on Linux; detection itself runs only on macOS.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import cache

from anetrain.hardware.chips import chip_names, get_chip, macos_versions, normalize_name

SYSCTL = "/usr/sbin/sysctl"


@dataclass(frozen=True)
class DetectedChip:
    """What detection found: our part name (or None), the raw clues, and how it decided."""

    chip: str | None
    brand_string: str | None
    ane_subtype: str | None
    source: str


def chip_from_brand(brand: str | None) -> str | None:
    """``"Apple M4 Max"`` -> ``"m4max"``; None for anything we have no profile for."""
    if not brand:
        return None
    names = chip_names()
    key = normalize_name(brand)
    if key in names:
        return key
    match = re.search(r"m\d+(?:pro|max|ultra)?", key)
    if match and match.group(0) in names:
        return match.group(0)
    return None


def chip_from_subtype(subtype: str | None) -> str | None:
    """``"h16"`` -> ``"m4"`` (the family's base part, since the subtype has no Pro/Max)."""
    if not subtype:
        return None
    match = re.search(r"h(\d+)", subtype.lower())
    if match is None:
        return None
    arch = f"h{match.group(1)}"
    for name in chip_names():
        profile = get_chip(name)
        if profile.arch == arch and profile.name == profile.family:
            return name
    return None


def macos_major(release: str | None) -> str | None:
    """``"15.6.1"`` -> ``"15"`` when profiles exist for it; None (the newest profile) else.
    A version newer than every profile also maps to the newest: rules rarely loosen."""
    if not release:
        return None
    major = release.split(".")[0]
    return major if major in macos_versions() else None


def host_macos() -> str | None:
    """This Mac's macOS major version for :func:`get_chip`, or None off macOS."""
    if sys.platform != "darwin":
        return None
    return macos_major(platform.mac_ver()[0])


def brand_string() -> str | None:
    """The CPU brand string on macOS, else None; never raises."""
    if sys.platform != "darwin":
        return None
    try:
        result = subprocess.run(
            [SYSCTL, "-n", "machdep.cpu.brand_string"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def ane_subtype() -> str | None:
    """``_ANEDeviceInfo.aneSubType`` when the framework loads, else None; never raises."""
    from anetrain.runtime.ane.objc_bridge import bridge_status, load_bridge

    ok, _ = bridge_status()
    if not ok:
        return None
    try:
        return load_bridge().ane_subtype()
    except Exception:
        return None


@cache
def detect_chip() -> DetectedChip:
    """Detect once per process; off macOS the answer is "nothing detected"."""
    if sys.platform != "darwin":
        return DetectedChip(None, None, None, f"not macOS: this is {sys.platform}")
    brand = brand_string()
    subtype = ane_subtype()
    by_brand = chip_from_brand(brand)
    if by_brand is not None:
        return DetectedChip(by_brand, brand, subtype, "brand string")
    by_subtype = chip_from_subtype(subtype)
    if by_subtype is not None:
        return DetectedChip(by_subtype, brand, subtype, "ANE subtype (family only)")
    return DetectedChip(None, brand, subtype, "no known chip in the brand string or ANE subtype")
