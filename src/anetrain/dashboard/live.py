"""Drawing the dashboard: one frame (``--once``) or a full-screen loop until the run ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.live import Live

from anetrain.dashboard.state import RunState
from anetrain.dashboard.view import Options, frame


def print_frame(state: RunState, console: Console, opts: Options | None = None) -> None:
    """Print one frame at its natural height (for ``--once``, scripts and the final frame)."""
    layout, height = frame(state, console, time.time(), opts or Options())
    console.print(layout, height=height)


def follow(
    run_dir: Path,
    console: Console,
    *,
    refresh: float = 1.0,
    window: int = 400,
    linger: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Redraw every ``refresh`` seconds until Ctrl-C, or until ``linger`` seconds after
    ``summary.json`` appears, then leave the final frame in the terminal.

    A run that had already finished when the dashboard started is shown until Ctrl-C (it
    may be about to resume: the old summary only goes stale once the trainer restarts).
    """
    state = RunState.open(run_dir)
    opts = Options(window=window, refresh=refresh)
    armed = not state.finished  # exit by ourselves only after seeing the run unfinished
    finished_at: float | None = None
    try:
        with Live(
            console=console,
            screen=True,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as live:
            while True:
                state.update()
                if not state.finished:
                    armed, finished_at, opts.closing_in = True, None, None
                elif armed:
                    finished_at = finished_at or time.monotonic()
                    opts.closing_in = max(linger - (time.monotonic() - finished_at), 0.0)
                layout, _ = frame(state, console, time.time(), opts, height=console.height)
                live.update(layout, refresh=True)
                if opts.closing_in is not None and opts.closing_in <= 0:
                    break
                sleep(min(refresh, opts.closing_in) if opts.closing_in else refresh)
    except KeyboardInterrupt:
        last, total = state.last, state.total_steps
        where = f"step {last.step}" + (f"/{total}" if total else "") if last else "no steps yet"
        console.print(f"stopped following {run_dir} ({where})")
        return 0
    print_frame(state, console, Options(window=window))
    return 0
