"""The ``anetrain`` command: one parser, subcommands implemented in :mod:`anetrain.commands`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from anetrain import __version__
from anetrain.errors import AnetrainError


def build_parser() -> argparse.ArgumentParser:
    from anetrain.commands import bench as bench_cmd
    from anetrain.commands import dashboard as dash_cmd
    from anetrain.commands import data as data_cmd
    from anetrain.commands import doctor as doctor_cmd
    from anetrain.commands import export as export_cmd
    from anetrain.commands import generate as generate_cmd
    from anetrain.commands import mil as mil_cmd
    from anetrain.commands import train as train_cmd

    parser = argparse.ArgumentParser(
        prog="anetrain",
        description="Train and benchmark transformers on Apple's Neural Engine (or its simulator).",
    )
    parser.add_argument("--version", action="version", version=f"anetrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = (
        train_cmd,
        generate_cmd,
        dash_cmd,
        bench_cmd,
        mil_cmd,
        data_cmd,
        export_cmd,
        doctor_cmd,
    )
    for module in commands:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except AnetrainError as err:
        print(f"anetrain: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("anetrain: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
