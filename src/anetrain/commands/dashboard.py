"""``anetrain dashboard``: a live terminal view of a training run folder."""

from __future__ import annotations

import argparse
import math

from anetrain.commands.args import folder_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dashboard",
        help="live terminal dashboard of a training run folder",
        description="Follow a run folder written by `anetrain train --out DIR`: progress and "
        "ETA, the loss chart, lr, grad norm, loss scale, throughput, the time per pipeline "
        "phase and, when the run ends, its Efficiency Report and sample. Redraws until Ctrl-C, "
        "and exits by itself a few seconds after the run finishes.",
    )
    p.add_argument(
        "run_dir", type=folder_path, metavar="RUN_DIR", help="the run folder (train --out)"
    )
    p.add_argument(
        "--refresh",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between redraws (default 1)",
    )
    p.add_argument(
        "--window",
        type=int,
        metavar="N",
        default=400,
        help="steps shown in the loss chart (default 400; a shorter run is shown whole)",
    )
    p.add_argument("--once", action="store_true", help="print one frame to stdout and exit")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from anetrain.dashboard.live import follow, print_frame
    from anetrain.dashboard.state import DashboardError, RunState
    from anetrain.dashboard.view import Options

    if not 0 < args.refresh < math.inf:
        raise DashboardError(f"--refresh must be a positive number of seconds, got {args.refresh}")
    if args.window < 2:
        raise DashboardError(f"--window must be at least 2 steps, got {args.window}")
    console = Console()
    if args.once:
        state = RunState.open(args.run_dir)
        problems = state.problems()
        if problems:  # one frame is a report: damaged run files are an error, not a blank view
            raise DashboardError(f"{'; '.join(problems)}; restore or remove the damaged file")
        print_frame(state, console, Options(window=args.window))
        return 0
    return follow(args.run_dir, console, refresh=args.refresh, window=args.window)
