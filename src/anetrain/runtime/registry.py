"""Backend registry: backends are imported lazily by name, so importing anetrain never imports
PyObjC (or anything macOS-only) until the ``ane`` backend is asked for on a Mac.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from anetrain.hardware.chips import ChipProfile
from anetrain.runtime.backend import Backend
from anetrain.runtime.errors import BackendUnavailable

# name -> "module:attribute"; the ane backend lives in anetrain.runtime.ane (macOS only).
BACKENDS: dict[str, str] = {
    "sim": "anetrain.runtime.sim:SimBackend",
    "ane": "anetrain.runtime.ane:AneBackend",
}


def register_backend(name: str, target: str) -> None:
    """Make ``get_backend(name)`` import ``target`` ("module:ClassName") on first use."""
    if ":" not in target:
        raise ValueError(f"backend target must be 'module:attribute', got {target!r}")
    BACKENDS[name] = target


def backend_class(name: str) -> type[Backend]:
    """Import and return the backend class registered as ``name``."""
    try:
        target = BACKENDS[name]
    except KeyError:
        known = ", ".join([*BACKENDS, "auto"])
        raise BackendUnavailable(f"unknown backend {name!r}; choose one of: {known}") from None
    if name == "ane" and sys.platform != "darwin":
        raise BackendUnavailable(
            f"backend 'ane' needs macOS on Apple silicon (this is {sys.platform}); "
            "use backend='sim' to run the same programs in the simulator"
        )
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BackendUnavailable(f"backend {name!r} cannot be imported: {err}") from err
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendUnavailable(f"{target} is not a Backend subclass")
    return cls


def backend_status(name: str) -> tuple[bool, str]:
    """``(available, reason)`` for a registered backend, without raising."""
    try:
        cls = backend_class(name)
    except BackendUnavailable as err:
        return False, str(err)
    try:
        return cls.available()
    except Exception as err:  # available() must not raise; report it if it does
        return False, f"{name}.available() failed: {err}"


_auto_notice_shown = False


def resolve_backend_name(name: str) -> str:
    """``name`` itself, or for "auto" the backend to use: off macOS "sim" without probing; on a
    Mac "ane" only once a quick probe of the ANE passes (the verdict is cached per machine,
    macOS version and anetrain version), else "sim" with one line on stderr saying which
    stage failed. "ane" itself is never softened: it fails loudly when unusable."""
    global _auto_notice_shown
    if name != "auto":
        return name
    if sys.platform != "darwin":
        return "sim"
    from anetrain.runtime.ane.selftest import ane_verdict

    ok, reason = ane_verdict()
    if ok:
        return "ane"
    if not _auto_notice_shown:
        _auto_notice_shown = True
        print(
            f"anetrain: --backend auto is using the simulator: the ANE probe failed ({reason}); "
            "run 'anetrain doctor --selftest' for a report",
            file=sys.stderr,
        )
    return "sim"


def get_backend(
    name: str = "auto", chip: str | ChipProfile | None = None, **options: Any
) -> Backend:
    """A backend instance: "sim", "ane", or "auto" (see :func:`resolve_backend_name`).

    ``chip`` selects the profile (default: the backend's choice; sim uses "m4"); ``options``
    go to the backend constructor (e.g. ``compile_budget=``, or sim's ``flush_subnormals=``).
    """
    name = resolve_backend_name(name)
    cls = backend_class(name)
    ok, reason = cls.available()
    if not ok:
        raise BackendUnavailable(f"backend {name!r} is not available: {reason}")
    return cls(chip, **options)
