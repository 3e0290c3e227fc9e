"""What a benchmark suite hands back: its JSON rows, summary figures and what to plot."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Series:
    label: str
    x: list[float]
    y: list[float]
    style: str = "o-"


@dataclass
class PlotSpec:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    vline: tuple[float, str] | None = None  # (x, label), e.g. the modeled SRAM capacity
    logx: bool = False
    bars: bool = False  # draw the first series as bars over its x labels


@dataclass
class SuiteResult:
    key: str  # the entry under "benchmarks" in the JSON document
    rows: list[dict[str, Any]] | dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    plot: PlotSpec | None = None
    bar_labels: list[str] = field(default_factory=list)


def r(value: float | None, digits: int = 3) -> float | None:
    """Round for JSON, keeping None."""
    return None if value is None else round(float(value), digits)
