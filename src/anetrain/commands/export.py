"""``anetrain export coreml``: a MIL program as a Core ML ``.mlpackage`` (needs coremltools)."""

from __future__ import annotations

import argparse
from pathlib import Path

from anetrain.commands.args import file_path


def register(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="convert programs to other formats")
    kinds = export.add_subparsers(dest="export_kind", metavar="FORMAT", required=True)
    coreml = kinds.add_parser(
        "coreml",
        help="a .mil program (and its weights) as a Core ML .mlpackage",
        description="Translate a MIL program into coremltools' MIL, check that coremltools "
        "infers the same types, and save it as an .mlpackage (no optimisation passes). "
        "Needs coremltools (pip install coremltools).",
    )
    coreml.add_argument("file", type=file_path, help="the .mil text file")
    coreml.add_argument("--out", type=file_path, required=True, help="output path, NAME.mlpackage")
    coreml.add_argument(
        "--weights",
        type=Path,
        help="folder the BLOBFILE paths are relative to (default: the .mil file's folder)",
    )
    coreml.set_defaults(handler=run_coreml)


def run_coreml(args: argparse.Namespace) -> int:
    from anetrain.commands.mil import load_program
    from anetrain.mil.coreml import blob_resolver, export_mlpackage

    program = load_program(args.file)
    if program is None:
        return 1
    root = args.weights if args.weights is not None else args.file.parent
    saved = export_mlpackage(program, args.out, blob_resolver(root))
    print(f"wrote {saved}")
    return 0
