"""Short human-readable numbers for the dashboard (plain strings)."""

from __future__ import annotations

DASH = "—"


def num(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals, or a dash for a missing / non-finite value."""
    return DASH if value is None else f"{value:.{digits}f}"


def sci(value: float | None) -> str:
    return DASH if value is None else f"{value:.2e}"


def count(value: float | None) -> str:
    """Thousands-separated integer."""
    return DASH if value is None else f"{value:,.0f}"


def duration(seconds: float | None) -> str:
    """``4.2s``, ``42s``, ``3m 05s``, ``2h 03m``."""
    if seconds is None:
        return DASH
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def millions(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 10_000 else f"{n / 1e3:.1f}K"
