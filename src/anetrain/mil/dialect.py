"""The two text dialects the ANE compiler accepts, selected by a target name.

``ios18`` is ``program(1.3)`` with compact scalars (``string("x")``), used on M3 and later;
``ios16`` is ``program(1.0)`` with verbose scalars (``tensor<string, []>("x")``), which M1 and
M2 need.
"""

from __future__ import annotations

from dataclasses import dataclass

OPSET_ORDER = ("ios15", "ios16", "ios17", "ios18")


@dataclass(frozen=True)
class Dialect:
    target: str
    program_version: str
    opset: str
    verbose_scalars: bool


IOS18 = Dialect("ios18", "1.3", "ios18", verbose_scalars=False)
IOS16 = Dialect("ios16", "1.0", "ios16", verbose_scalars=True)

DIALECTS = {d.target: d for d in (IOS18, IOS16)}


def get_dialect(target: str | Dialect) -> Dialect:
    if isinstance(target, Dialect):
        return target
    try:
        return DIALECTS[target]
    except KeyError:
        known = ", ".join(DIALECTS)
        raise ValueError(f"unknown MIL target {target!r}; choose one of: {known}") from None


def dialect_for_version(program_version: str) -> Dialect:
    """Spelling rules follow the program version: 1.0 is verbose, later versions compact."""
    return IOS16 if program_version == "1.0" else IOS18


def opset_at_least(opset: str, minimum: str) -> bool:
    if opset not in OPSET_ORDER:
        return False
    return OPSET_ORDER.index(opset) >= OPSET_ORDER.index(minimum)
