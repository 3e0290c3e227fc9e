"""Charts drawn with unicode block characters, as plain strings (no rich here).

- :func:`sparkline`: one row, one character per bucket, ``▁`` (low) to ``█`` (high).
- :func:`loss_chart`: a multi-row area chart of the training loss with validation points
  (``●``) drawn on top, plus the axis ranges the caller labels.
- :func:`bar_cells`: how many cells of a stacked bar each part gets.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

BLOCKS = " ▁▂▃▄▅▆▇█"  # index = eighths of a cell filled
VAL_MARK = "●"


def buckets(values: Sequence[float | None], width: int) -> list[float | None]:
    """Means of ``values`` over ``width`` equal buckets (None values skipped; an empty bucket is
    None). With fewer values than ``width``, one bucket per value."""
    n = len(values)
    if width <= 0 or n == 0:
        return []
    if n <= width:
        return list(values)
    out: list[float | None] = []
    for c in range(width):
        chunk = [v for v in values[c * n // width : (c + 1) * n // width] if v is not None]
        out.append(sum(chunk) / len(chunk) if chunk else None)
    return out


def sparkline(values: Sequence[float | None], width: int | None = None) -> str:
    """One row of ``▁▂▃▄▅▆▇█`` scaled from min to max; None (and NaN) draw a space.

    ``width`` caps the length by averaging neighbours; a constant series draws mid-height.
    """
    clean = [None if v is None or not math.isfinite(v) else v for v in values]
    cols = buckets(clean, len(clean) if width is None else width)
    finite = [v for v in cols if v is not None]
    if not finite:
        return " " * len(cols)
    lo, hi = min(finite), max(finite)
    out = []
    for v in cols:
        if v is None:
            out.append(" ")
        elif hi == lo:
            out.append(BLOCKS[4])
        else:
            out.append(BLOCKS[1 + round((v - lo) / (hi - lo) * 7)])
    return "".join(out)


@dataclass(frozen=True)
class Chart:
    """A rendered chart: ``rows`` top to bottom, all ``width`` long; ``lo``/``hi`` are the
    values of the bottom and top edges, ``first``/``last`` the steps of the left and right
    edges."""

    rows: list[str]
    lo: float
    hi: float
    first: int
    last: int


def loss_chart(
    train: Sequence[tuple[int, float | None]],
    val: Sequence[tuple[int, float | None]] = (),
    *,
    width: int,
    height: int,
    first: int | None = None,
    last: int | None = None,
) -> Chart | None:
    """An area chart of ``train`` (step, loss) pairs over steps ``first..last`` (default: the
    steps given), ``width`` columns by ``height`` rows, with ``val`` points marked ``●``.

    Each column shows the mean loss of the steps it covers (a step is repeated across columns
    when there are fewer steps than columns). The y range spans the visible train and val
    values. None when nothing finite falls in the range.
    """
    if width <= 0 or height <= 0 or not train:
        return None
    steps = [s for s, _ in train]
    first = steps[0] if first is None else first
    last = max(steps[-1], first) if last is None else max(last, first)
    span = last - first + 1
    cols: list[float | None] = []
    for c in range(width):
        lo_step = first + c * span // width
        hi_step = max(first + (c + 1) * span // width, lo_step + 1)  # exclusive
        i, j = bisect.bisect_left(steps, lo_step), bisect.bisect_left(steps, hi_step)
        chunk = [v for _, v in train[i:j] if v is not None and math.isfinite(v)]
        cols.append(sum(chunk) / len(chunk) if chunk else None)
    starts = [first + c * span // width for c in range(width)]
    marks = [  # the last column showing step s (a val loss is measured after its step)
        (bisect.bisect_right(starts, s) - 1, v)
        for s, v in val
        if first <= s <= last and v is not None and math.isfinite(v)
    ]
    finite = [v for v in cols if v is not None] + [v for _, v in marks]
    if not finite:
        return None
    lo, hi = min(finite), max(finite)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    eighths = height * 8
    grid = [[" "] * width for _ in range(height)]
    for c, v in enumerate(cols):
        if v is None:
            continue
        filled = 1 + round((v - lo) / (hi - lo) * (eighths - 1))
        for r in range(height):
            level = min(max(filled - (height - 1 - r) * 8, 0), 8)
            grid[r][c] = BLOCKS[level]
    for c, v in marks:
        r = height - 1 - min(int((v - lo) / (hi - lo) * height), height - 1)
        grid[r][c] = VAL_MARK
    return Chart(["".join(row) for row in grid], lo, hi, first, last)


def bar_cells(parts: Sequence[float], width: int) -> list[int]:
    """Cells per part of a ``width``-cell stacked bar, proportional to ``parts`` (largest
    remainder, so the cells add up to ``width`` when the parts sum to more than zero)."""
    total = sum(p for p in parts if p > 0)
    if width <= 0 or total <= 0:
        return [0] * len(parts)
    exact = [max(p, 0) / total * width for p in parts]
    cells = [math.floor(x) for x in exact]
    order = sorted(range(len(parts)), key=lambda i: exact[i] - cells[i], reverse=True)
    for i in order[: width - sum(cells)]:
        cells[i] += 1
    return cells


def hbar(fraction: float, width: int) -> str:
    """A horizontal bar ``width`` cells wide filled to ``fraction`` (0..1), in eighths."""
    if width <= 0:
        return ""
    eighths = round(min(max(fraction, 0.0), 1.0) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")).ljust(width)
