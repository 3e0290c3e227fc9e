"""``anetrain mil``: check and re-print MIL programs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from anetrain.commands.args import file_or_folder, file_path
from anetrain.commands.chipargs import add_chip_options, resolve_chip
from anetrain.errors import MILError

if TYPE_CHECKING:
    from anetrain.mil.ir import Program


def register(sub: argparse._SubParsersAction) -> None:
    mil = sub.add_parser("mil", help="check and print MIL programs")
    mil_sub = mil.add_subparsers(dest="mil_command", metavar="ACTION", required=True)

    check = mil_sub.add_parser(
        "check",
        help="parse, validate and summarize a .mil program",
        description="Parse and validate a MIL program, resolve its BLOBFILE weights and print "
        "a summary. Errors print as FILE:LINE:COL: message and exit non-zero.",
    )
    check.add_argument("file", type=file_path, help="the .mil text file")
    check.add_argument(
        "--weights",
        type=file_or_folder,
        help="folder holding the weight files (the model folder or its weights/ folder); "
        "default: the .mil file's folder",
    )
    check.add_argument(
        "--target",
        choices=["ios18", "ios16"],
        help="also require the program to be valid for this dialect "
        "(ios18: program(1.3); ios16: program(1.0), M1/M2)",
    )
    add_chip_options(
        check,
        "also check the program against the constraints registry for this chip (every "
        "error and warning, with its source)",
    )
    check.set_defaults(handler=run_check)

    fmt = mil_sub.add_parser(
        "print", help="re-print a program in canonical form, optionally for another target"
    )
    fmt.add_argument("file", type=file_path)
    fmt.add_argument("--target", choices=["ios18", "ios16"])
    fmt.set_defaults(handler=run_print)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MILError(f"no such file; check the path ({path})", source=str(path)) from None
    except UnicodeDecodeError as err:
        raise MILError(
            f"not UTF-8 text (byte {err.start}); is this a compiled model?", source=str(path)
        ) from None


def report(err: MILError, path: Path) -> None:
    """Print ``FILE:LINE:COL: error: message`` on stderr (the validator's format)."""
    where = ":".join(str(p) for p in (err.source or path, err.line, err.col) if p is not None)
    print(f"{where}: error: {err.message}", file=sys.stderr)


def load_program(path: Path) -> Program | None:
    """Read and parse ``path``; on a bad file, report it and return None."""
    from anetrain.mil import parse_program

    try:
        return parse_program(_read(path))
    except MILError as err:
        report(err, path)
        return None


def run_check(args: argparse.Namespace) -> int:
    from anetrain.mil.summary import format_summary
    from anetrain.mil.validate import directory_blob_opener, validate_program

    path: Path = args.file
    program = load_program(path)
    if program is None:
        return 1
    weights_root = args.weights if args.weights is not None else path.parent
    issues = validate_program(program, directory_blob_opener(weights_root), target=args.target)
    errors = [i for i in issues if i.severity == "error"]
    for issue in issues:
        where = ":".join(str(p) for p in (path, issue.line, issue.col) if p is not None)
        print(f"{where}: {issue.severity}: {issue.message}", file=sys.stderr)
    chip = resolve_chip(args)
    if chip is not None:
        from anetrain.runtime.preflight import preflight

        findings = preflight(program, chip)
        for f in findings:
            print(f.format(str(path)), file=sys.stderr)
        n_err = sum(f.severity == "error" for f in findings)
        print(
            f"{path}: {chip.label}: {n_err} error(s), {len(findings) - n_err} warning(s) "
            "from the constraints registry",
            file=sys.stderr,
        )
        if n_err:
            return 1
    if errors:
        return 1
    print(format_summary(path, program))
    return 0


def run_print(args: argparse.Namespace) -> int:
    from anetrain.mil import print_program

    path: Path = args.file
    program = load_program(path)
    if program is None:
        return 1
    try:
        text = print_program(program, target=args.target)
    except MILError as err:
        report(err, path)
        return 1
    sys.stdout.write(text)
    return 0
