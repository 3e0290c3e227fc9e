"""The constraints registry: every known rule about what the ANE accepts, as data.

Entries come from ``constraints.json``; each names the ``check`` that tests a program for it
(implemented once, in :mod:`anetrain.runtime.preflight`), the chips and macOS versions it
applies to, its evidence, its confidence and whether a violation is an error or a warning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from anetrain.hardware.chips import ChipProfile
from anetrain.hardware.errors import ChipProfileError

SEVERITIES = ("error", "warning")
CONFIDENCES = ("measured", "reported", "assumed")


@dataclass(frozen=True)
class Evidence:
    project: str
    ref: str  # issue, PR, paper or file
    observed: str

    def __str__(self) -> str:
        return f"{self.project} {self.ref}: {self.observed}"


@dataclass(frozen=True)
class Constraint:
    """One rule of the registry."""

    id: str
    rule: str
    check: str
    chips: tuple[str, ...]
    macos: tuple[str, ...]
    severity: str
    confidence: str
    fix: str
    evidence: tuple[Evidence, ...]
    params: dict[str, Any] = field(default_factory=dict)

    def applies_to(self, chip: ChipProfile) -> bool:
        """Whether this rule binds ``chip`` (by part or family) on its macOS version."""
        on_chip = "*" in self.chips or chip.name in self.chips or chip.family in self.chips
        on_os = "*" in self.macos or not chip.macos or chip.macos in self.macos
        return on_chip and on_os

    @property
    def source(self) -> str:
        """Short provenance for a linter line: ``reported: maderix/ANE PR #6``."""
        refs = "; ".join(f"{e.project} {e.ref}" for e in self.evidence)
        return f"{self.confidence}: {refs}"


def _entry(raw: dict[str, Any]) -> Constraint:
    try:
        c = Constraint(
            id=raw["id"],
            rule=raw["rule"],
            check=raw["check"],
            chips=tuple(raw["chips"]),
            macos=tuple(raw["macos"]),
            severity=raw["severity"],
            confidence=raw["confidence"],
            fix=raw["fix"],
            evidence=tuple(Evidence(**e) for e in raw["evidence"]),
            params=dict(raw.get("params", {})),
        )
    except (KeyError, TypeError) as err:
        raise ChipProfileError(f"constraints.json entry {raw.get('id')!r}: {err}") from None
    if c.severity not in SEVERITIES or c.confidence not in CONFIDENCES or not c.evidence:
        raise ChipProfileError(
            f"constraints.json entry {c.id!r}: severity must be one of {SEVERITIES}, confidence "
            f"one of {CONFIDENCES}, and it needs at least one evidence item"
        )
    return c


@lru_cache(maxsize=1)
def constraints() -> tuple[Constraint, ...]:
    """Every registry entry, in file order."""
    text = resources.files("anetrain.hardware").joinpath("constraints.json").read_text("utf-8")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ChipProfileError(f"constraints.json is not valid JSON: {err}") from None
    entries = tuple(_entry(raw) for raw in doc.get("constraints", []))
    ids = [c.id for c in entries]
    if len(set(ids)) != len(ids):
        raise ChipProfileError("constraints.json: duplicate constraint ids")
    return entries


def constraints_for(chip: ChipProfile) -> tuple[Constraint, ...]:
    """The entries that bind ``chip`` on its macOS version."""
    return tuple(c for c in constraints() if c.applies_to(chip))
