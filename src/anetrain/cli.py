"""The ``anetrain`` command: one parser, subcommands implemented in :mod:`anetrain.commands`."""

from __future__ import annotations

import errno
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from anetrain import __version__
from anetrain.commands.args import OneLineParser
from anetrain.errors import AnetrainError


def build_parser() -> OneLineParser:
    from anetrain.commands import bench as bench_cmd
    from anetrain.commands import dashboard as dash_cmd
    from anetrain.commands import data as data_cmd
    from anetrain.commands import doctor as doctor_cmd
    from anetrain.commands import export as export_cmd
    from anetrain.commands import generate as generate_cmd
    from anetrain.commands import mil as mil_cmd
    from anetrain.commands import perfmodel as perfmodel_cmd
    from anetrain.commands import train as train_cmd

    parser = OneLineParser(
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
        perfmodel_cmd,
        data_cmd,
        export_cmd,
        doctor_cmd,
    )
    for module in commands:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line, for a command that re-executes itself
    handler = getattr(args, "handler", None)
    if handler is None:
        choices = ", ".join(parser.subcommands())
        parser.error(f"no command given; choose one of {choices}")
    try:
        return int(handler(args) or 0)
    except AnetrainError as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        print("anetrain: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        return _fail(
            "out of memory; use a smaller model (--model/--config) or free memory, "
            "and set --max-memory to be refused before allocating"
        )
    except BrokenPipeError:  # e.g. `anetrain data info F | head`: the reader has all it wants
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a shell tool killed by it would exit
    except OSError as err:  # the file system said no: a user-fixable condition, not our bug
        return _fail(describe_os_error(err))
    except Exception:  # our bug: keep the traceback, ask for a report
        traceback.print_exc()
        print(
            f"anetrain: internal error (a bug in anetrain {__version__}); please report it with "
            "the command line and the traceback above to the project's issue tracker",
            file=sys.stderr,
        )
        return 70


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _fail(message: str) -> int:
    first, *rest = message.splitlines() or [""]
    print(f"anetrain: error: {first}", file=sys.stderr)
    for line in rest:  # keep any detail (e.g. a caret under a MIL column) below the line
        print(f"  {line}", file=sys.stderr)
    return 1


def describe_os_error(err: OSError) -> str:
    """One line for a file-system error: what, where, what to do."""
    where = f"{err.filename}: " if err.filename else ""
    reason = err.strerror or str(err)
    hints = {
        errno.ENOSPC: "free space on that disk (or choose another --out) and run again",
        errno.EDQUOT: "free space within your quota and run again",
        errno.EACCES: "choose a folder you can write to, or fix its permissions",
        errno.EPERM: "choose a folder you can write to, or fix its permissions",
        errno.EROFS: "the file system is read-only; choose a writable folder",
        errno.ENOTDIR: "a file is in the way of a folder in that path; choose another path",
        errno.EISDIR: "that path is a folder; give a file path",
        errno.ENOENT: "check the path",
        errno.EEXIST: "remove it or choose another path",
    }
    hint = hints.get(err.errno or 0, "check the path and try again")
    if err.errno in (errno.EEXIST, errno.ENOTDIR) and err.filename and Path(err.filename).is_file():
        reason, hint = "a file is where a folder is needed", "move it or choose another path"
    return f"{where}{reason}; {hint}"


if __name__ == "__main__":
    raise SystemExit(main())
