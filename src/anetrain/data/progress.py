"""Progress reporting for long data jobs (downloads, tokenizing).

Uses ``rich`` (the optional ``ui`` extra) when it is importable; otherwise prints one plain line
to stderr when the job starts and one when it ends, so logs stay readable without the extra.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Progress(Protocol):
    """Something a job reports its advance to."""

    def update(self, advance: int) -> None: ...


class _Silent:
    def update(self, advance: int) -> None:
        pass


class _Plain:
    """Fallback: a start line and a summary line on stderr."""

    def __init__(self, description: str, total: int | None, unit: str) -> None:
        self.description = description
        self.unit = unit
        self.done = 0
        self.start = time.perf_counter()
        size = f" ({_human(total, unit)})" if total else ""
        print(f"{description}{size} ...", file=sys.stderr, flush=True)

    def update(self, advance: int) -> None:
        self.done += advance

    def finish(self) -> None:
        elapsed = time.perf_counter() - self.start
        print(
            f"{self.description}: {_human(self.done, self.unit)} in {elapsed:.1f} s",
            file=sys.stderr,
            flush=True,
        )


def _human(n: int, unit: str) -> str:
    if unit == "B":
        for suffix, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if n >= scale:
                return f"{n / scale:.1f} {suffix}"
        return f"{n} B"
    return f"{n:,} {unit}"


@contextmanager
def progress(
    description: str, total: int | None = None, *, unit: str = "B", enabled: bool = True
) -> Iterator[Progress]:
    """Report progress of a job of ``total`` units (bytes when ``unit == "B"``)."""
    if not enabled:
        yield _Silent()
        return
    try:
        import rich.progress as rp
        from rich.console import Console
    except ImportError:
        plain = _Plain(description, total, unit)
        yield plain
        plain.finish()
        return
    columns: list[rp.ProgressColumn] = [
        rp.TextColumn("{task.description}"),
        rp.BarColumn(),
        rp.DownloadColumn() if unit == "B" else rp.MofNCompleteColumn(),
        rp.TransferSpeedColumn() if unit == "B" else rp.TimeElapsedColumn(),
        rp.TimeRemainingColumn(),
    ]
    with rp.Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)

        class _Rich:
            def update(self, advance: int) -> None:
                bar.update(task, advance=advance)

        yield _Rich()
